"""LoRA (Hu et al., 2021): a rank per module group, per block of layers, in the layers chosen.

A plan's LoRA part is one plain ``peft.LoraConfig``: ``target_modules`` is one regular expression
naming exactly the (layer, module) pairs of the plan; ``rank_pattern`` and ``alpha_pattern`` give
each module group, in each of its layer blocks, its own rank and alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from ..families import MODULE_GROUPS
from ..types import SpaceError, Strict, layers_text
from .base import Method, check_groups, check_sizes, register_method


@dataclass(frozen=True)
class LoraTarget:
    """LoRA on one module group (e.g. all query projections) in some layers."""

    group: str
    rank: int
    alpha: float
    layers: tuple[int, ...]


@dataclass(frozen=True)
class Lora:
    method: ClassVar[str] = "lora"
    targets: tuple[LoraTarget, ...]


class LoraSpace(Strict):
    groups: dict[str, list[int]] = Field(min_length=1)
    alpha: float | list[float] | None = None
    layer_groups: int = Field(1, ge=1, description="contiguous blocks of layers, each with its own ranks")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, list[int]]) -> dict[str, list[int]]:
        for group, ranks in groups.items():
            if group not in MODULE_GROUPS:
                raise ValueError(f"unknown module group '{group}'; known: {', '.join(MODULE_GROUPS)}")
            check_sizes(ranks, f"group '{group}'")
        return {g: sorted(r) for g, r in groups.items()}


def layer_blocks(num_layers: int, groups: int) -> list[range]:
    groups = min(groups, num_layers)
    bounds = [round(k * num_layers / groups) for k in range(groups + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(groups)]


def rank_name(group: str, block: int, blocks: int) -> str:
    return f"lora.{group}.rank" if blocks == 1 else f"lora.{group}.rank.{block}"


def _active(targets) -> tuple[LoraTarget, ...]:
    return tuple(t for t in targets if t.rank > 0 and t.layers)


def _every_layer(shape, groups, rank: int = 8) -> Lora:
    return Lora(tuple(LoraTarget(g, rank, 2.0 * rank, tuple(range(shape.num_layers))) for g in groups))


class LoraMethod(Method):
    name = "lora"
    title = "LoRA"
    part = Lora
    space = LoraSpace
    order = 10
    peft_type = "LORA"
    parameter_prefix = "lora_"
    baselines = {  # rank 8, alpha 16, every layer: on query and value, and on the MLP (its gate too, if gated)
        "lora-r8": lambda s: (_every_layer(s, ("query", "value")),),
        "lora-mlp-r8": lambda s: (_every_layer(s, [g for g in ("ffn_gate", "ffn_in", "ffn_out") if g in s.group_dims]),),
    }

    def check(self, spec: LoraSpace, shape, alone: bool) -> None:
        check_groups(spec.groups, shape, "modules.lora.groups")
        for group, ranks in spec.groups.items():
            width = min(shape.group_dims[group])
            if max(ranks) > width:
                raise SpaceError(f"modules.lora.groups.{group}",
                                 f"rank {max(ranks)} is larger than the layer width {width} of '{group}' in this model",
                                 f"use ranks of at most {width}")
        if alone and all(max(r) == 0 for r in spec.groups.values()):
            raise SpaceError("modules.lora.groups", "every rank is 0, so no plan trains an adapter",
                             "give each group some rank choices above 0")

    def dimensions(self, spec: LoraSpace, shape) -> list[tuple[str, tuple]]:
        blocks = len(layer_blocks(shape.num_layers, spec.layer_groups))
        dims = [(rank_name(g, k, blocks), tuple(ranks)) for g, ranks in spec.groups.items() for k in range(blocks)]
        if isinstance(spec.alpha, list):
            dims.append(("lora.alpha", tuple(sorted(spec.alpha))))
        return dims

    def groups(self, spec: LoraSpace) -> set[str]:
        return {g for g, ranks in spec.groups.items() if max(ranks) > 0}

    def part_groups(self, part: Lora) -> set[str]:
        return {t.group for t in part.targets}

    def decode(self, spec: LoraSpace, value, layers, shape) -> Lora | None:
        blocks = layer_blocks(shape.num_layers, spec.layer_groups)
        targets = []
        for group in spec.groups:
            for k, block in enumerate(blocks):
                rank = value[rank_name(group, k, len(blocks))]
                if isinstance(spec.alpha, list):
                    alpha = float(value["lora.alpha"])
                else:
                    alpha = float(spec.alpha) if spec.alpha is not None else 2.0 * rank
                targets.append(LoraTarget(group, rank, alpha, tuple(i for i in layers if i in block) if rank else ()))
        active = _active(targets)
        return Lora(active) if active else None

    def smallest(self, spec: LoraSpace, shape, layers) -> Lora | None:
        options = [Lora((LoraTarget(g, min(r for r in ranks if r > 0), 1.0, layers),))
                   for g, ranks in spec.groups.items() if max(ranks) > 0]
        return min(options, key=lambda part: self.count(part, shape), default=None)

    def count(self, part: Lora, shape) -> int:
        return sum(t.rank * sum(shape.group_dims[t.group]) * len(t.layers) for t in part.targets)

    def layers(self, part: Lora, shape) -> set[int]:
        return {layer for target in part.targets for layer in target.layers}

    def peft_kwargs(self, part: Lora, shape) -> dict:
        family = shape.family
        patterns = [family.pattern(t.group, t.layers) for t in part.targets]
        first = part.targets[0]
        return {
            "target_modules": r"(?:.*\.)?(?:" + "|".join(patterns) + ")",
            "r": first.rank,
            "lora_alpha": first.alpha,
            "rank_pattern": {p: t.rank for p, t in zip(patterns, part.targets, strict=True)},
            "alpha_pattern": {p: t.alpha for p, t in zip(patterns, part.targets, strict=True)},
            "lora_dropout": 0.0,
            "fan_in_fan_out": family.fan_in_fan_out,
        }

    def describe(self, part: Lora) -> str:
        layer_sets = {t.layers for t in part.targets}
        if len(layer_sets) == 1:
            return (" ".join(f"{t.group}:r{t.rank}" for t in part.targets)
                    + " @ layers " + ",".join(map(str, next(iter(layer_sets)))))
        return " ".join(f"{t.group}:r{t.rank}@{layers_text(t.layers)}" for t in part.targets)

    def from_dict(self, data) -> Lora:
        return Lora(tuple(LoraTarget(t["group"], int(t["rank"]), float(t["alpha"]), tuple(int(i) for i in t["layers"]))
                          for t in data["targets"]))

    def from_legacy(self, data) -> Lora | None:
        active = _active(self.from_dict({"targets": data.get("lora", [])}).targets)
        return Lora(active) if active else None


register_method(LoraMethod())
