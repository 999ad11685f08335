"""The methods with a rank per module group, per block of layers (LoRA, LoHa, LoKr): their space
entry, dimensions, decoding and peft config, shared; each method says what one wrapped linear
layer of a given rank costs.

A plan's part is one peft config: ``target_modules`` is one regular expression naming exactly the
(layer, module) pairs of the plan; ``rank_pattern`` and ``alpha_pattern`` give each module group,
in each of its layer blocks, its own rank and alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from ..types import SpaceError, Strict, layers_text
from .base import Method, check_groups, check_sizes, known_groups


@dataclass(frozen=True)
class RankTarget:
    """One module group (e.g. all query projections) at one rank in some layers."""

    group: str
    rank: int
    alpha: float
    layers: tuple[int, ...]


@dataclass(frozen=True)
class Ranked:
    """The part of a ranked method; each method subclasses it to name itself."""

    method: ClassVar[str]
    targets: tuple[RankTarget, ...]


class RankedSpace(Strict):
    groups: dict[str, list[int]] = Field(min_length=1)
    alpha: float | list[float] | None = None
    layer_groups: int = Field(1, ge=1, description="contiguous blocks of layers, each with its own ranks")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, list[int]]) -> dict[str, list[int]]:
        for group, ranks in known_groups(groups).items():
            check_sizes(ranks, f"group '{group}'")
        return {g: sorted(r) for g, r in groups.items()}


def layer_blocks(num_layers: int, groups: int) -> list[range]:
    groups = min(groups, num_layers)
    bounds = [round(k * num_layers / groups) for k in range(groups + 1)]
    return [range(bounds[k], bounds[k + 1]) for k in range(groups)]


def active(targets) -> tuple[RankTarget, ...]:
    return tuple(t for t in targets if t.rank > 0 and t.layers)


class RankedMethod(Method):
    """A method with one rank per module group and layer block; alpha defaults to twice the rank."""

    space = RankedSpace
    rank_field: ClassVar[str] = "r"
    alpha_field: ClassVar[str] = "alpha"

    def per_module(self, rank: int, fan_in: int, fan_out: int, part) -> int:
        """Parameters one wrapped layer of this shape trains at ``rank``."""
        raise NotImplementedError

    def extra_kwargs(self, part, shape) -> dict:
        """Further fields of the peft config for ``part``."""
        return {}

    def make(self, targets: tuple[RankTarget, ...], spec=None, value=None):
        """The part with ``targets`` (``spec`` and ``value``: the space entry and point it decodes)."""
        return self.part(targets)

    def every_layer(self, shape, groups, rank: int = 8, **fields):
        """The part with ``rank`` (alpha twice the rank) on ``groups`` in every layer."""
        return self.part(tuple(RankTarget(g, rank, 2.0 * rank, tuple(range(shape.num_layers))) for g in groups), **fields)

    def rank_name(self, group: str, block: int, blocks: int) -> str:
        return f"{self.name}.{group}.rank" if blocks == 1 else f"{self.name}.{group}.rank.{block}"

    def check(self, spec: RankedSpace, shape, alone: bool) -> None:
        check_groups(spec.groups, shape, f"modules.{self.name}.groups")
        for group, ranks in spec.groups.items():
            width = min(shape.group_dims[group])
            if max(ranks) > width:
                raise SpaceError(f"modules.{self.name}.groups.{group}",
                                 f"rank {max(ranks)} is larger than the layer width {width} of '{group}' in this model",
                                 f"use ranks of at most {width}")
        if alone and all(max(r) == 0 for r in spec.groups.values()):
            raise SpaceError(f"modules.{self.name}.groups", "every rank is 0, so no plan trains an adapter",
                             "give each group some rank choices above 0")

    def dimensions(self, spec: RankedSpace, shape) -> list[tuple[str, tuple]]:
        blocks = len(layer_blocks(shape.num_layers, spec.layer_groups))
        dims = [(self.rank_name(g, k, blocks), tuple(ranks)) for g, ranks in spec.groups.items() for k in range(blocks)]
        if isinstance(spec.alpha, list):
            dims.append((f"{self.name}.alpha", tuple(sorted(spec.alpha))))
        return dims

    def groups(self, spec: RankedSpace, shape) -> set[str]:
        return {g for g, ranks in spec.groups.items() if max(ranks) > 0}

    def part_groups(self, part) -> set[str]:
        return {t.group for t in part.targets}

    def decode(self, spec: RankedSpace, value, layers, shape):
        blocks = layer_blocks(shape.num_layers, spec.layer_groups)
        targets = []
        for group in spec.groups:
            for k, block in enumerate(blocks):
                rank = value[self.rank_name(group, k, len(blocks))]
                if isinstance(spec.alpha, list):
                    alpha = float(value[f"{self.name}.alpha"])
                else:
                    alpha = float(spec.alpha) if spec.alpha is not None else 2.0 * rank
                targets.append(RankTarget(group, rank, alpha, tuple(i for i in layers if i in block) if rank else ()))
        targets = active(targets)
        return self.make(targets, spec, value) if targets else None

    def smallest(self, spec: RankedSpace, shape, layers):
        options = [self.make((RankTarget(g, min(r for r in ranks if r > 0), 1.0, layers),), spec)
                   for g, ranks in spec.groups.items() if max(ranks) > 0]
        return min(options, key=lambda part: self.count(part, shape), default=None)

    def count(self, part, shape) -> int:
        return sum(self.per_module(t.rank, *shape.group_dims[t.group], part) * len(t.layers) for t in part.targets)

    def layers(self, part, shape) -> set[int]:
        return {layer for target in part.targets for layer in target.layers}

    def peft_kwargs(self, part, shape) -> dict:
        family = shape.family
        patterns = [family.pattern(t.group, t.layers) for t in part.targets]
        first = part.targets[0]
        kwargs = {
            "target_modules": r"(?:.*\.)?(?:" + "|".join(patterns) + ")",
            self.rank_field: first.rank,
            self.alpha_field: first.alpha,
            "rank_pattern": {p: t.rank for p, t in zip(patterns, part.targets, strict=True)},
            "alpha_pattern": {p: t.alpha for p, t in zip(patterns, part.targets, strict=True)},
        }
        return {**kwargs, **self.extra_kwargs(part, shape)}

    def describe(self, part) -> str:
        layer_sets = {t.layers for t in part.targets}
        tag = "" if self.name == "lora" else f"{self.name} "
        if len(layer_sets) == 1:
            return (tag + " ".join(f"{t.group}:r{t.rank}" for t in part.targets)
                    + " @ layers " + layers_text(next(iter(layer_sets))))
        return tag + " ".join(f"{t.group}:r{t.rank}@{layers_text(t.layers)}" for t in part.targets)

    def from_dict(self, data):
        targets = tuple(RankTarget(t["group"], int(t["rank"]), float(t["alpha"]), tuple(int(i) for i in t["layers"]))
                        for t in data["targets"])
        return self.part(targets, **{k: v for k, v in data.items() if k != "targets"})
