"""Search spaces: a YAML file, its fixed-dimension encoding, and decoding a point into a Plan.

Every dimension is ordinal over a short list of choices (index 0 is the first choice);
a module size of 0 turns that module off and a layer bit of 0 turns that layer off.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from autopeft.errors import UserError, from_validation_error
from workers.models import MODULE_GROUPS, ModelShape
from workers.plan import count_trainable
from workers.types import LoraTarget, Plan

MODULE_TYPES = ("lora",)


class LoraSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, list[int]] = Field(min_length=1)
    alpha: float | list[float] | None = None

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, list[int]]) -> dict[str, list[int]]:
        for group, ranks in groups.items():
            if group not in MODULE_GROUPS:
                raise ValueError(f"unknown module group '{group}'; known: {', '.join(MODULE_GROUPS)}")
            if not ranks:
                raise ValueError(f"group '{group}' has no rank choices")
            if any(r < 0 for r in ranks) or len(set(ranks)) != len(ranks):
                raise ValueError(f"group '{group}': ranks must be distinct and >= 0")
        return {g: sorted(r) for g, r in groups.items()}


class SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    modules: dict[str, LoraSpace] = Field(min_length=1)
    layers: Literal["per_layer", "all"] = "per_layer"
    learning_rate: list[float] | None = None

    @field_validator("modules", mode="before")
    @classmethod
    def _known_modules(cls, modules: object) -> object:
        if isinstance(modules, dict):
            for name in modules:
                if name not in MODULE_TYPES:
                    raise ValueError(f"unknown module '{name}'; known: {', '.join(MODULE_TYPES)}")
        return modules


@dataclass(frozen=True)
class Dimension:
    name: str
    choices: tuple


@dataclass(frozen=True)
class SearchSpace:
    """A space file bound to one model shape: fixed dimensions, decoding and exact cost."""

    spec: SpaceFile
    shape: ModelShape
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, object]

    def distributions(self) -> dict:
        from optuna.distributions import IntDistribution

        return {d.name: IntDistribution(0, len(d.choices) - 1) for d in self.dimensions}

    def decode(self, point: dict[str, int]) -> Plan:
        """The Plan for a point given as choice indices, one per dimension."""
        value = self.values(point)
        if self.spec.layers == "per_layer":
            layers = tuple(i for i in range(self.shape.num_layers) if value[f"layer.{i}"])
        else:
            layers = tuple(range(self.shape.num_layers))
        lora_spec = self.spec.modules["lora"]
        targets = []
        for group in lora_spec.groups:
            rank = value[f"lora.{group}.rank"]
            if isinstance(lora_spec.alpha, list):
                alpha = float(value["lora.alpha"])
            elif lora_spec.alpha is not None:
                alpha = float(lora_spec.alpha)
            else:
                alpha = 2.0 * rank
            targets.append(LoraTarget(group=group, rank=rank, alpha=alpha, layers=layers if rank else ()))
        return Plan(lora=tuple(targets), learning_rate=value.get("learning_rate"))

    def values(self, point: dict[str, int]) -> dict[str, object]:
        """Human-readable values of a point (ranks, bits, rates), for logging."""
        return {**self.fixed, **{d.name: d.choices[int(point[d.name])] for d in self.dimensions}}

    def largest_plan(self) -> Plan:
        return self.decode({d.name: len(d.choices) - 1 for d in self.dimensions})

    def count(self, plan: Plan) -> int:
        return count_trainable(plan, self.shape)


def _read_space_file(name_or_path: str) -> tuple[dict, str]:
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError("search_space", f"space file '{path}' does not exist", "give an existing YAML file or a built-in space name")
        text, source = path.read_text(), str(path)
    else:
        shipped = resources.files("search_spaces").joinpath(f"{name_or_path}.yaml")
        if not shipped.is_file():
            known = sorted(p.name[:-5] for p in resources.files("search_spaces").iterdir() if p.name.endswith(".yaml"))
            raise UserError("search_space", f"no built-in space '{name_or_path}'", f"use one of {', '.join(known)} or a path to a .yaml file")
        text, source = shipped.read_text(), f"search space '{name_or_path}'"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(source, f"YAML syntax error: {exc}", "fix the space file's syntax") from None
    if not isinstance(data, dict):
        raise UserError(source, "the space file is empty or not a mapping", "see 'Search space files' in the README")
    return data, source


def load_space(name_or_path: str, shape: ModelShape) -> SearchSpace:
    """Read a space file (built-in name or path), check it against the model and fix its dimensions."""
    data, source = _read_space_file(name_or_path)
    try:
        spec = SpaceFile.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source, SpaceFile) from None
    return build_space(spec, shape, source)


def build_space(spec: SpaceFile, shape: ModelShape, source: str = "search space") -> SearchSpace:
    dims: list[Dimension] = []
    lora_spec = spec.modules["lora"]
    for group, ranks in lora_spec.groups.items():
        width = min(shape.group_dims[group])
        too_big = [r for r in ranks if r > width]
        if too_big:
            raise UserError(
                f"{source}: modules.lora.groups.{group}",
                f"rank {max(too_big)} is larger than the layer width {width} of '{group}' in this model",
                f"use ranks of at most {width}",
            )
        if len(ranks) > 1:
            dims.append(Dimension(f"lora.{group}.rank", tuple(ranks)))
    if isinstance(lora_spec.alpha, list) and len(lora_spec.alpha) > 1:
        dims.append(Dimension("lora.alpha", tuple(sorted(lora_spec.alpha))))
    if spec.learning_rate and len(spec.learning_rate) > 1:
        dims.append(Dimension("learning_rate", tuple(sorted(spec.learning_rate))))
    if spec.layers == "per_layer":
        dims.extend(Dimension(f"layer.{i}", (0, 1)) for i in range(shape.num_layers))
    fixed = _fixed_choices(spec)
    if all(max(ranks) == 0 for ranks in lora_spec.groups.values()):
        raise UserError(f"{source}: modules.lora.groups", "every rank is 0, so no plan trains an adapter", "give each group some rank choices above 0")
    if not dims:
        raise UserError(f"{source}", "the space has no dimension: every choice is fixed", "give at least one field two or more choices")
    return SearchSpace(spec=spec, shape=shape, dimensions=tuple(dims), fixed=fixed)


def _fixed_choices(spec: SpaceFile) -> dict[str, object]:
    """Single-choice settings: not dimensions, but part of every decoded plan."""
    fixed: dict[str, object] = {}
    lora_spec = spec.modules["lora"]
    for group, ranks in lora_spec.groups.items():
        if len(ranks) == 1:
            fixed[f"lora.{group}.rank"] = ranks[0]
    if isinstance(lora_spec.alpha, list) and len(lora_spec.alpha) == 1:
        fixed["lora.alpha"] = lora_spec.alpha[0]
    if spec.learning_rate and len(spec.learning_rate) == 1:
        fixed["learning_rate"] = spec.learning_rate[0]
    return fixed
