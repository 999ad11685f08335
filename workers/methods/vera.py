"""VeRA (Kopiczko et al., 2024): one pair of random projections shared by every wrapped layer and
frozen; each layer trains only two scaling vectors, one of the rank's length and one of its output
width. The rank is one per plan (the projections are shared); peft saves them with the adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import query_and_value, register_method
from .grouped import Grouped, GroupedMethod


@dataclass(frozen=True)
class Vera(Grouped):
    method: ClassVar[str] = "vera"


class VeraMethod(GroupedMethod):
    name = "vera"
    title = "VeRA"
    part = Vera
    order = 14
    peft_type = "VERA"
    parameter_prefix = "vera_lambda"
    setting = "rank"
    learning_rate_scale = 10.0  # only scaling vectors train: VeRA's paper uses about ten times LoRA's rate
    baselines = {"vera-r256": lambda s: (Vera(query_and_value(s), 256, tuple(range(s.num_layers))),)}

    def per_module(self, size: int, fan_in: int, fan_out: int) -> int:
        return size + fan_out

    def peft_kwargs(self, part: Vera, shape) -> dict:
        return {"target_modules": self.target_modules(part, shape), "r": part.size, "vera_dropout": 0.0,
                "save_projection": True, "fan_in_fan_out": shape.family.fan_in_fan_out}


METHOD = register_method(VeraMethod())
