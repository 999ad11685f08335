"""IA3 (Liu et al., 2022): learned scaling vectors on some module groups, in the layers chosen.

On the attention's key and value it scales each output unit; on ``ffn_out`` (a feed-forward module
in peft's terms) it scales each input unit, the FFN's hidden units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field, field_validator

from ..types import Strict, layers_text
from .base import Method, check_groups, known_groups, register_method

FEEDFORWARD_GROUPS = ("ffn_out",)


@dataclass(frozen=True)
class IA3:
    method: ClassVar[str] = "ia3"
    groups: tuple[str, ...]
    layers: tuple[int, ...]


class Ia3Space(Strict):
    groups: list[str] | None = Field(None, min_length=1, description="default: the family's own, see ``default_groups``")
    optional: bool = True

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: list[str] | None) -> list[str] | None:
        return groups if groups is None else known_groups(groups)


def default_groups(family) -> tuple[str, ...]:
    """Where IA3 goes unless told: the attention's key and value, or in a family that fuses them
    with the query (GPT-2's c_attn, Phi-3's qkv_proj, ModernBERT's Wqkv) the fused projection, as
    peft's IA3 does for GPT-2; and the FFN's hidden units (``ffn_out``)."""
    return family.holders(("key", "value", "ffn_out"))


def _groups(spec: Ia3Space, shape) -> tuple[str, ...]:
    return default_groups(shape.family) if spec.groups is None else tuple(spec.groups)


class Ia3Method(Method):
    name = "ia3"
    title = "IA3"
    part = IA3
    space = Ia3Space
    order = 20
    peft_type = "IA3"
    parameter_prefix = "ia3_"
    learning_rate_scale = 10.0  # scaling vectors start at 1 and move little at LoRA's rate; T-Few trains them at 3e-3
    baselines = {"ia3": lambda s: (IA3(default_groups(s.family), tuple(range(s.num_layers))),)}

    def check(self, spec: Ia3Space, shape, alone: bool) -> None:
        check_groups(_groups(spec, shape), shape, "modules.ia3.groups")

    def dimensions(self, spec: Ia3Space, shape) -> list[tuple[str, tuple]]:
        return [("ia3", (0, 1) if spec.optional else (1,))]

    def groups(self, spec: Ia3Space, shape) -> set[str]:
        return set(_groups(spec, shape))

    def part_groups(self, part: IA3) -> set[str]:
        return set(part.groups)

    def decode(self, spec: Ia3Space, value, layers, shape) -> IA3 | None:
        return IA3(_groups(spec, shape), layers) if value.get("ia3", 1) and layers else None

    def smallest(self, spec: Ia3Space, shape, layers) -> IA3:
        return IA3(_groups(spec, shape), layers)

    def count(self, part: IA3, shape) -> int:
        per_layer = sum(shape.group_dims[g][0 if g in FEEDFORWARD_GROUPS else 1] for g in part.groups)
        return per_layer * len(part.layers)

    def layers(self, part: IA3, shape) -> set[int]:
        return set(part.layers)

    def peft_kwargs(self, part: IA3, shape) -> dict:
        family = shape.family

        def anchored(groups) -> str:
            return r"(?:.*\.)?(?:" + "|".join(family.pattern(g, part.layers) for g in groups) + ")"

        feedforward = [g for g in part.groups if g in FEEDFORWARD_GROUPS]
        return {"target_modules": anchored(part.groups),
                "feedforward_modules": anchored(feedforward) if feedforward else r"(?!x)x",
                "fan_in_fan_out": family.fan_in_fan_out}

    def describe(self, part: IA3) -> str:
        return f"ia3 {'+'.join(part.groups)} @{layers_text(part.layers)}"

    def from_legacy(self, data) -> IA3 | None:
        groups, layers = tuple(data.get("ia3_groups", ())), tuple(int(i) for i in data.get("ia3_layers", ()))
        return IA3(groups, layers) if groups and layers else None


register_method(Ia3Method())
