"""LoKr (Edalati et al., 2022, via LyCORIS): a weight update that is a Kronecker product of a small
full factor and a rank-r factor; a rank per module group, per block of layers, like LoRA.

peft factors each dimension in two (``factorization``); the second factor is a rank-r product
unless the rank is at least half its larger side, when it is a full matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import query_and_value, register_method
from .ranked import Ranked, RankedMethod


@dataclass(frozen=True)
class Lokr(Ranked):
    method: ClassVar[str] = "lokr"


class LokrMethod(RankedMethod):
    name = "lokr"
    title = "LoKr"
    part = Lokr
    order = 13
    peft_type = "LOKR"
    parameter_prefix = "lokr_"
    linear_only = True
    baselines = {"lokr-r8": lambda s: (METHOD.every_layer(s, query_and_value(s)),)}

    def per_module(self, rank: int, fan_in: int, fan_out: int, part) -> int:
        from peft.tuners.lokr.layer import factorization

        out_l, out_k = factorization(fan_out, -1)
        in_m, in_n = factorization(fan_in, -1)
        first = out_l * in_m
        second = out_k * in_n if rank >= max(out_k, in_n) / 2 else rank * (out_k + in_n)
        return first + second


METHOD = register_method(LokrMethod())
