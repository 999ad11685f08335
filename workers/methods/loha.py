"""LoHa (Hyeon-Woo et al., 2022, via LyCORIS): a weight update that is the Hadamard product of two
rank-r products; a rank per module group, per block of layers, like LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import query_and_value, register_method
from .ranked import Ranked, RankedMethod


@dataclass(frozen=True)
class Loha(Ranked):
    method: ClassVar[str] = "loha"


class LohaMethod(RankedMethod):
    name = "loha"
    title = "LoHa"
    part = Loha
    order = 12
    peft_type = "LOHA"
    parameter_prefix = "hada_"
    linear_only = True
    baselines = {"loha-r8": lambda s: (METHOD.every_layer(s, query_and_value(s)),)}

    def per_module(self, rank: int, fan_in: int, fan_out: int, part) -> int:
        return 2 * rank * (fan_in + fan_out)


METHOD = register_method(LohaMethod())
