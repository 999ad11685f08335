"""The methods with one setting per plan on a list of module groups (VeRA's rank, OFT's block size):
their space entry, one ``<name>.<setting>`` dimension (0 turns the method off), and decoding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from ..types import SpaceError, Strict, layers_text
from .base import Method, check_groups, check_sizes, known_groups


@dataclass(frozen=True)
class Grouped:
    """The part of a grouped method; each method subclasses it to name itself."""

    method: ClassVar[str]
    groups: tuple[str, ...]
    size: int
    layers: tuple[int, ...]


class GroupedSpace(Strict):
    groups: list[str] = Field(min_length=1)
    sizes: list[int] = Field(min_length=1, description="the setting's choices; 0 turns the method off")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        known_groups(groups)
        if len(set(groups)) != len(groups):
            raise ValueError("groups must be distinct")
        return groups

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        check_sizes(sizes, "sizes")
        return sorted(sizes)


class GroupedMethod(Method):
    space = GroupedSpace
    setting: ClassVar[str]  # what the size is: "rank", "block_size"

    def per_module(self, size: int, fan_in: int, fan_out: int) -> int:
        """Parameters one wrapped layer of this shape trains."""
        raise NotImplementedError

    def check_size(self, size: int, group: str, shape) -> str | None:
        """Why ``size`` cannot work on ``group`` of this model (None: it can)."""
        return None

    def check(self, spec: GroupedSpace, shape, alone: bool) -> None:
        check_groups(spec.groups, shape, f"modules.{self.name}.groups")
        for size in (s for s in spec.sizes if s > 0):
            for group in spec.groups:
                problem = self.check_size(size, group, shape)
                if problem:
                    raise SpaceError(f"modules.{self.name}.sizes", problem[0], problem[1])
        if alone and max(spec.sizes) == 0:
            raise SpaceError(f"modules.{self.name}.sizes", "every size is 0, so no plan trains an adapter", "give some sizes above 0")

    def dimensions(self, spec: GroupedSpace, shape) -> list[tuple[str, tuple]]:
        return [(f"{self.name}.{self.setting}", tuple(spec.sizes))]

    def groups(self, spec: GroupedSpace, shape) -> set[str]:
        return set(spec.groups) if max(spec.sizes) > 0 else set()

    def part_groups(self, part: Grouped) -> set[str]:
        return set(part.groups)

    def decode(self, spec: GroupedSpace, value, layers, shape):
        size = value[f"{self.name}.{self.setting}"]
        return self.part(tuple(spec.groups), size, layers) if size and layers else None

    def smallest(self, spec: GroupedSpace, shape, layers):
        positive = [s for s in spec.sizes if s > 0]
        return self.part(tuple(spec.groups), min(positive), layers) if positive else None

    def count(self, part: Grouped, shape) -> int:
        return sum(self.per_module(part.size, *shape.group_dims[g]) for g in part.groups) * len(part.layers)

    def layers(self, part: Grouped, shape) -> set[int]:
        return set(part.layers)

    def target_modules(self, part: Grouped, shape) -> str:
        return r"(?:.*\.)?(?:" + "|".join(shape.family.pattern(g, part.layers) for g in part.groups) + ")"

    def describe(self, part: Grouped) -> str:
        return f"{self.name} {'+'.join(part.groups)}:{self.setting.replace('_', ' ')} {part.size} @{layers_text(part.layers)}"
