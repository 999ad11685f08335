"""OFT (Qiu et al., 2023): each wrapped layer's input is rotated by a learned block-diagonal
orthogonal matrix; a block of size b trains b(b-1)/2 numbers (peft's skew-symmetric form), so a
layer with ``in`` inputs trains in(b-1)/2. The block size is one per plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import query_and_value, register_method
from .grouped import Grouped, GroupedMethod


@dataclass(frozen=True)
class Oft(Grouped):
    method: ClassVar[str] = "oft"


class OftMethod(GroupedMethod):
    name = "oft"
    title = "OFT"
    part = Oft
    order = 15
    peft_type = "OFT"
    parameter_prefix = "oft_R"
    setting = "block_size"
    linear_only = True
    baselines = {"oft": lambda s: (_every_layer(s, query_and_value(s)),)}

    def check_size(self, size: int, group: str, shape):
        fan_in = shape.group_dims[group][0]
        if fan_in % size:
            return (f"block size {size} does not divide the input width {fan_in} of '{group}' in this model",
                    f"use block sizes that divide {fan_in}")
        return None

    def per_module(self, size: int, fan_in: int, fan_out: int) -> int:
        return fan_in // size * (size * (size - 1) // 2)

    def peft_kwargs(self, part: Oft, shape) -> dict:
        return {"target_modules": self.target_modules(part, shape), "r": 0, "oft_block_size": part.size,
                "module_dropout": 0.0}


def _every_layer(shape, groups) -> Oft:
    return Oft(groups, _block(shape, groups), tuple(range(shape.num_layers)))


def _block(shape, groups, largest: int = 32) -> int:
    """The largest power-of-two block size up to ``largest`` that divides the input width of every group."""
    size = largest
    while any(shape.group_dims[g][0] % size for g in groups if g in shape.group_dims):
        size //= 2
    return size


METHOD = register_method(OftMethod())
