"""AdaLoRA (Zhang et al., 2023; peft's ``ADALORA``): LoRA in SVD form whose ranks are reallocated
among the wrapped layers while it trains, pruning the least important singular values down to a
total budget. The nearest peer to what autopeft does by search, so it runs as a named baseline
(``adalora``): on query and value in every layer, starting at rank 12 and ending with a budget of
rank 8 per layer on average, lora-r8's. It trains ``init_rank x (in + out + 1)`` parameters per
layer (the count below, what peft trains); its saved adapter keeps only the ranks it allocated.

The schedule follows the trial's length: no reallocation in the first 10% of the steps, the final
ranks fixed for the last 20%, a reallocation every 2% between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..types import layers_text
from .base import Method, query_and_value, register_method


@dataclass(frozen=True)
class AdaLora:
    method: ClassVar[str] = "adalora"
    groups: tuple[str, ...]
    target_rank: int
    init_rank: int
    layers: tuple[int, ...]


class AdaLoraMethod(Method):
    name = "adalora"
    title = "AdaLoRA"
    part = AdaLora
    order = 11
    peft_type = "ADALORA"
    parameter_prefix = "lora_"
    baselines = {"adalora": lambda s: (AdaLora(query_and_value(s), 8, 12, tuple(range(s.num_layers))),)}

    def part_groups(self, part: AdaLora) -> set[str]:
        return set(part.groups)

    def count(self, part: AdaLora, shape) -> int:
        return sum(part.init_rank * (fan_in + fan_out + 1) for fan_in, fan_out in (shape.group_dims[g] for g in part.groups)) \
            * len(part.layers)

    def layers(self, part: AdaLora, shape) -> set[int]:
        return set(part.layers)

    def peft_kwargs(self, part: AdaLora, shape) -> dict:
        family = shape.family
        return {"target_modules": r"(?:.*\.)?(?:" + "|".join(family.pattern(g, part.layers) for g in part.groups) + ")",
                "target_r": part.target_rank, "init_r": part.init_rank, "lora_alpha": 2.0 * part.target_rank,
                "lora_dropout": 0.0, "total_step": 1, "fan_in_fan_out": family.fan_in_fan_out}

    def before_training(self, model, part: AdaLora, total_steps: int) -> None:
        config = model.peft_config["default"]  # the tuner's rank allocator reads this very object
        config.total_step = total_steps
        config.tinit = total_steps // 10
        config.tfinal = total_steps // 5 if total_steps // 10 + total_steps // 5 < total_steps else 0
        config.deltaT = max(1, total_steps // 50)

    def after_step(self, model, part: AdaLora, step: int) -> None:
        model.base_model.update_and_allocate(step)

    def describe(self, part: AdaLora) -> str:
        return f"adalora {'+'.join(part.groups)}:r{part.init_rank}->{part.target_rank} @{layers_text(part.layers)}"


register_method(AdaLoraMethod())
