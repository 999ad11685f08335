"""Search spaces: a YAML file, its fixed-dimension encoding, and decoding a point into a Plan.

Every dimension is ordinal over a short list of choices (index 0 is the first choice); a
module size of 0 turns that module off and a layer bit of 0 turns that layer off.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autopeft.errors import UserError, from_validation_error
from workers.models import MODULE_GROUPS, ModelShape
from workers.plan import count_trainable
from workers.types import LoraTarget, Plan

MODULE_TYPES = ("lora", "ia3", "serial", "parallel", "prefix")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSpace(_Strict):
    groups: dict[str, list[int]] = Field(min_length=1)
    alpha: float | list[float] | None = None
    layer_groups: int = Field(1, ge=1, description="contiguous blocks of layers, each with its own ranks")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, list[int]]) -> dict[str, list[int]]:
        for group, ranks in groups.items():
            if group not in MODULE_GROUPS:
                raise ValueError(f"unknown module group '{group}'; known: {', '.join(MODULE_GROUPS)}")
            _check_sizes(ranks, f"group '{group}'")
        return {g: sorted(r) for g, r in groups.items()}


class Ia3Space(_Strict):
    groups: list[str] = Field(default_factory=lambda: ["key", "value", "ffn_out"], min_length=1)
    optional: bool = True

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if group not in MODULE_GROUPS:
                raise ValueError(f"unknown module group '{group}'; known: {', '.join(MODULE_GROUPS)}")
        return groups


class SizedSpace(_Strict):
    """A module with one size per point: ``sizes`` in units, or ``size_fractions`` of the model width."""

    sizes: list[int] | None = None
    size_fractions: list[float] | None = None
    attention: bool = False
    scaling: float = 4.0

    @model_validator(mode="after")
    def _one_kind(self) -> SizedSpace:
        if (self.sizes is None) == (self.size_fractions is None):
            raise ValueError("give exactly one of 'sizes' or 'size_fractions'")
        if self.sizes is not None:
            _check_sizes(self.sizes, "sizes")
        elif any(f < 0 or f > 1 for f in self.size_fractions):
            raise ValueError("size_fractions must lie between 0 and 1")
        return self

    def choices(self, width: int) -> tuple[int, ...]:
        if self.sizes is not None:
            return tuple(sorted(self.sizes))
        return tuple(sorted({0 if f == 0 else max(1, round(f * width)) for f in self.size_fractions}))


def _check_sizes(sizes: list[int], what: str) -> None:
    if not sizes:
        raise ValueError(f"{what} has no choices")
    if any(s < 0 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"{what}: choices must be distinct and >= 0")


class ModulesSpace(_Strict):
    lora: LoraSpace | None = None
    ia3: Ia3Space | None = None
    serial: SizedSpace | None = None
    parallel: SizedSpace | None = None
    prefix: SizedSpace | None = None


class SpaceFile(_Strict):
    name: str
    description: str = ""
    modules: ModulesSpace
    layers: Literal["per_layer", "per_module", "all"] | list[int] = "per_layer"
    learning_rate: list[float] | None = None

    @field_validator("modules", mode="before")
    @classmethod
    def _known_modules(cls, modules: object) -> object:
        if isinstance(modules, dict):
            if not modules:
                raise ValueError("the space names no module; use some of " + ", ".join(MODULE_TYPES))
            for name in modules:
                if name not in MODULE_TYPES:
                    raise ValueError(f"unknown module '{name}'; known: {', '.join(MODULE_TYPES)}")
        return modules

    def present(self) -> list[str]:
        return [m for m in MODULE_TYPES if getattr(self.modules, m) is not None]


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

    def values(self, point: dict[str, int]) -> dict[str, object]:
        """Human-readable values of a point (ranks, sizes, bits), fixed settings included."""
        return {**self.fixed, **{d.name: d.choices[int(point[d.name])] for d in self.dimensions}}

    def _layers(self, value: dict[str, object], module: str) -> tuple[int, ...]:
        layers = self.spec.layers
        if layers == "all":
            return tuple(range(self.shape.num_layers))
        if isinstance(layers, list):
            return tuple(sorted(layers))
        prefix = f"{module}.layer" if layers == "per_module" else "layer"
        return tuple(i for i in range(self.shape.num_layers) if value[f"{prefix}.{i}"])

    def decode(self, point: dict[str, int]) -> Plan:
        """The Plan for a point given as choice indices, one per dimension."""
        value = self.values(point)
        modules = self.spec.modules
        fields: dict[str, object] = {"learning_rate": value.get("learning_rate")}
        if modules.lora is not None:
            layers = self._layers(value, "lora")
            blocks = _layer_blocks(self.shape.num_layers, modules.lora.layer_groups)
            targets = []
            for group in modules.lora.groups:
                for k, block in enumerate(blocks):
                    rank = value[_rank_name(group, k, len(blocks))]
                    on = tuple(i for i in layers if i in block) if rank else ()
                    if isinstance(modules.lora.alpha, list):
                        alpha = float(value["lora.alpha"])
                    else:
                        alpha = float(modules.lora.alpha) if modules.lora.alpha is not None else 2.0 * rank
                    targets.append(LoraTarget(group=group, rank=rank, alpha=alpha, layers=on))
            fields["lora"] = tuple(targets)
        if modules.ia3 is not None and value.get("ia3", 1):
            fields["ia3_groups"] = tuple(modules.ia3.groups)
            fields["ia3_layers"] = self._layers(value, "ia3")
        for module, field_name in (("serial", "serial_ffn"), ("parallel", "parallel_ffn"), ("prefix", "prefix")):
            spec = getattr(modules, module)
            if spec is None:
                continue
            size = value[f"{module}.size"]
            sizes = tuple((i, size) for i in self._layers(value, module)) if size else ()
            fields[field_name] = sizes
            if module == "serial" and spec.attention:
                fields["serial_attention"] = sizes
            if module == "parallel":
                fields["parallel_scaling"] = spec.scaling
        return Plan(**fields)

    def smallest_plan(self) -> Plan:
        """The cheapest plan that still trains something: one module at its least size in as few layers as allowed."""
        layers = self.spec.layers
        few = (0,) if layers in ("per_layer", "per_module") else tuple(range(self.shape.num_layers)) if layers == "all" else tuple(layers)
        modules = self.spec.modules
        candidates = []
        if modules.lora is not None:
            for group, ranks in modules.lora.groups.items():
                positive = [r for r in ranks if r > 0]
                if positive:
                    candidates.append(Plan(lora=(LoraTarget(group, min(positive), 1.0, few),)))
        if modules.ia3 is not None:
            candidates.append(Plan(ia3_groups=tuple(modules.ia3.groups), ia3_layers=few))
        for module, field_name in (("serial", "serial_ffn"), ("parallel", "parallel_ffn"), ("prefix", "prefix")):
            spec = getattr(modules, module)
            positive = [s for s in spec.choices(self.shape.hidden_size) if s > 0] if spec is not None else []
            if positive:
                sizes = tuple((i, min(positive)) for i in few)
                extra = {"serial_attention": sizes} if module == "serial" and spec.attention else {}
                candidates.append(Plan(**{field_name: sizes}, **extra))
        return min(candidates, key=self.count)

    def largest_plan(self) -> Plan:
        return self.decode({d.name: len(d.choices) - 1 for d in self.dimensions})

    def count(self, plan: Plan) -> int:
        return count_trainable(plan, self.shape)


def _layer_blocks(num_layers: int, groups: int) -> list[range]:
    groups = min(groups, num_layers)
    bounds = [round(k * num_layers / groups) for k in range(groups + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(groups)]


def _rank_name(group: str, block: int, blocks: int) -> str:
    return f"lora.{group}.rank" if blocks == 1 else f"lora.{group}.rank.{block}"


def _read_space_file(name_or_path: str) -> tuple[dict, str]:
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise UserError("search_space", f"space file '{path}' does not exist", "give an existing YAML file or a built-in space name")
        text, source = path.read_text(), str(path)
    else:
        shipped = resources.files("search_spaces").joinpath(f"{name_or_path}.yaml")
        if not shipped.is_file():
            raise UserError("search_space", f"no built-in space '{name_or_path}'", f"use one of {', '.join(builtin_spaces())} or a path to a .yaml file")
        text, source = shipped.read_text(), f"search space '{name_or_path}'"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(source, f"YAML syntax error: {exc}", "fix the space file's syntax") from None
    if not isinstance(data, dict):
        raise UserError(source, "the space file is empty or not a mapping", "see 'Search space files' in the README")
    return data, source


def builtin_spaces() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("search_spaces").iterdir() if p.name.endswith(".yaml"))


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
    fixed: dict[str, object] = {}

    def add(name: str, choices: tuple) -> None:
        if len(choices) > 1:
            dims.append(Dimension(name, choices))
        else:
            fixed[name] = choices[0]

    modules = spec.modules
    present = spec.present()
    if any(m in present for m in ("serial", "parallel", "prefix")) and not shape.architecture.has_blocks:
        raise UserError(f"{source}: modules", f"serial, parallel and prefix modules need a BERT-style model, not '{shape.model_type}'",
                        "use lora and ia3 only with this model")
    if modules.lora is not None:
        for group, ranks in modules.lora.groups.items():
            width = min(shape.group_dims[group])
            if max(ranks) > width:
                raise UserError(f"{source}: modules.lora.groups.{group}",
                                f"rank {max(ranks)} is larger than the layer width {width} of '{group}' in this model",
                                f"use ranks of at most {width}")
        if all(max(r) == 0 for r in modules.lora.groups.values()) and len(present) == 1:
            raise UserError(f"{source}: modules.lora.groups", "every rank is 0, so no plan trains an adapter",
                            "give each group some rank choices above 0")
        blocks = _layer_blocks(shape.num_layers, modules.lora.layer_groups)
        for group, ranks in modules.lora.groups.items():
            for k in range(len(blocks)):
                add(_rank_name(group, k, len(blocks)), tuple(ranks))
        if isinstance(modules.lora.alpha, list):
            add("lora.alpha", tuple(sorted(modules.lora.alpha)))
    if modules.ia3 is not None:
        if modules.lora is not None:
            shared = set(modules.ia3.groups) & {g for g, r in modules.lora.groups.items() if max(r) > 0}
            if shared:
                raise UserError(f"{source}: modules.ia3.groups",
                                f"LoRA and IA3 cannot both adapt '{sorted(shared)[0]}'", "give each module group to one of them")
        add("ia3", (0, 1) if modules.ia3.optional else (1,))
    for module in ("serial", "parallel", "prefix"):
        sized = getattr(modules, module)
        if sized is None:
            continue
        choices = sized.choices(shape.hidden_size)
        if module != "prefix" and max(choices) > shape.hidden_size:
            raise UserError(f"{source}: modules.{module}.sizes",
                            f"size {max(choices)} is larger than the model width {shape.hidden_size}",
                            f"use sizes of at most {shape.hidden_size}")
        add(f"{module}.size", choices)
    if spec.learning_rate:
        add("learning_rate", tuple(sorted(spec.learning_rate)))
    if isinstance(spec.layers, list):
        outside = [i for i in spec.layers if i < 0 or i >= shape.num_layers]
        if outside:
            raise UserError(f"{source}: layers", f"layer {outside[0]} is outside the model, which has layers 0 to {shape.num_layers - 1}",
                            f"use layer indices from 0 to {shape.num_layers - 1}")
    elif spec.layers == "per_layer":
        dims.extend(Dimension(f"layer.{i}", (0, 1)) for i in range(shape.num_layers))
    elif spec.layers == "per_module":
        for module in present:
            dims.extend(Dimension(f"{module}.layer.{i}", (0, 1)) for i in range(shape.num_layers))
    if not dims:
        raise UserError(f"{source}", "the space has no dimension: every choice is fixed", "give at least one field two or more choices")
    return SearchSpace(spec=spec, shape=shape, dimensions=tuple(dims), fixed=fixed)
