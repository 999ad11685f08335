"""Choosing the method per module group: for each group, one of several methods at one of its
sizes, or none. Not a PEFT method itself: a point decodes into the parts of the methods chosen.

Each group's choice is one dimension whose options are ordered by what one layer of that group
costs, so that neighbouring options cost about the same (the dimensions are ordinal). The methods
are those with a rank per group (LoRA, LoHa, LoKr) and those with one setting per plan on a list
of groups (VeRA's rank, OFT's block size: one size each here). Options that do not fit the model
(a method on Conv1D layers that wraps Linear layers only, a block size that does not divide a
layer's width, a rank above it) are left out.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..families import MODULE_GROUPS
from ..types import SpaceError, Strict
from .base import METHODS, Method, check_groups, check_sizes, known_groups, ordered, register_method
from .grouped import GroupedMethod
from .ranked import RankedMethod, RankTarget

OFF = "off"


class PerGroupSpace(Strict):
    groups: list[str] | Literal["all"] = "all"
    methods: dict[str, list[int]] = Field(min_length=1, description="method -> its sizes (ranks, or OFT's block size)")
    lora_variants: list[Literal["plain", "dora", "rslora", "pissa"]] = Field(["plain"], min_length=1)

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups):
        return groups if groups == "all" else known_groups(groups)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: dict[str, list[int]]) -> dict[str, list[int]]:
        choosable = [n for n in ordered(METHODS) if isinstance(METHODS[n], RankedMethod | GroupedMethod)]
        for name, sizes in methods.items():
            if name not in choosable:
                raise ValueError(f"'{name}' cannot be chosen per module group; use some of {', '.join(choosable)}")
            check_sizes(sizes, f"method '{name}'")
            if 0 in sizes:
                raise ValueError(f"method '{name}': sizes must be above 0 (no method on a group is always a choice)")
            if isinstance(METHODS[name], GroupedMethod) and len(sizes) > 1:
                raise ValueError(f"method '{name}' takes one size here: its {METHODS[name].setting} is one per plan")
        return methods


def _groups(spec: PerGroupSpace, shape) -> list[str]:
    return list(shape.family.groups) if spec.groups == "all" else spec.groups


def _fits(name: str, size: int, group: str, shape) -> bool:
    descriptor = METHODS[name]
    if not descriptor.fits(shape.family):
        return False
    if isinstance(descriptor, GroupedMethod):
        return descriptor.check_size(size, group, shape) is None
    return size <= min(shape.group_dims[group])


def _cost(name: str, size: int, group: str, shape) -> int:
    descriptor, (fan_in, fan_out) = METHODS[name], shape.group_dims[group]
    if isinstance(descriptor, GroupedMethod):
        return descriptor.per_module(size, fan_in, fan_out)
    return descriptor.per_module(size, fan_in, fan_out, descriptor.part(()))


def options(spec: PerGroupSpace, group: str, shape) -> tuple[str, ...]:
    """``off`` and every ``method:size`` that fits ``group``, cheapest first."""
    fitting = [(n, s) for n, sizes in spec.methods.items() for s in sizes if _fits(n, s, group, shape)]
    fitting.sort(key=lambda choice: (_cost(*choice, group, shape), choice))
    return (OFF, *(f"{n}:{s}" for n, s in fitting))


class PerGroupMethod(Method):
    name = "per_group"
    title = "per-group choice"
    part = None
    space = PerGroupSpace
    order = 5

    def check(self, spec: PerGroupSpace, shape, alone: bool) -> None:
        if spec.groups != "all":
            check_groups(spec.groups, shape, "modules.per_group.groups")
        if all(len(options(spec, g, shape)) == 1 for g in _groups(spec, shape)):
            raise SpaceError("modules.per_group.methods", f"no method fits any module group of this {shape.family.name} model",
                             "use methods and sizes that fit it: " + ", ".join(n for n, m in METHODS.items() if m.fits(shape.family)
                                                                              and isinstance(m, RankedMethod | GroupedMethod)))

    def dimensions(self, spec: PerGroupSpace, shape) -> list[tuple[str, tuple]]:
        dims = [(f"per_group.{g}", options(spec, g, shape)) for g in _groups(spec, shape)]
        if "lora" in spec.methods and len(spec.lora_variants) > 1:
            dims.append(("per_group.lora_variant", tuple(spec.lora_variants)))
        return dims

    def produces(self, spec: PerGroupSpace) -> list[str]:
        return ordered(spec.methods)

    def groups(self, spec: PerGroupSpace, shape) -> set[str]:
        return set(MODULE_GROUPS) if spec.groups == "all" else set(spec.groups)

    def _parts(self, spec: PerGroupSpace, chosen: dict[str, str], layers, variant: str) -> tuple:
        ranked: dict[str, list[RankTarget]] = {}
        grouped: dict[str, tuple[int, list[str]]] = {}
        for group, option in chosen.items():
            if option == OFF:
                continue
            name, size = option.split(":")
            if isinstance(METHODS[name], RankedMethod):
                ranked.setdefault(name, []).append(RankTarget(group, int(size), 2.0 * int(size), layers))
            else:
                grouped.setdefault(name, (int(size), []))[1].append(group)
        parts = [METHODS[n].part(tuple(targets), variant) if n == "lora" else METHODS[n].part(tuple(targets))
                 for n, targets in ranked.items()]
        parts += [METHODS[n].part(tuple(groups), size, layers) for n, (size, groups) in grouped.items()]
        return tuple(parts)

    def decode(self, spec: PerGroupSpace, value, layers, shape):
        if not layers:
            return ()
        chosen = {g: value[f"per_group.{g}"] for g in _groups(spec, shape)}
        variant = value.get("per_group.lora_variant", spec.lora_variants[0])
        return self._parts(spec, chosen, layers, variant)

    def smallest(self, spec: PerGroupSpace, shape, layers):
        cheapest = [(g, options(spec, g, shape)[1]) for g in _groups(spec, shape) if len(options(spec, g, shape)) > 1]
        if not cheapest:
            return None
        group, option = min(cheapest, key=lambda c: _cost(c[1].split(":")[0], int(c[1].split(":")[1]), c[0], shape))
        return self._parts(spec, {group: option}, layers, spec.lora_variants[0])[0]


register_method(PerGroupMethod())
