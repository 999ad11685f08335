"""BitFit (Ben Zaken et al., 2022): only the biases of some module groups train, in the layers chosen.

Not a peft method of peft's own: registered as the peft type ``BITFIT``, so that its adapter saves
with ``save_pretrained`` and loads with ``PeftModel.from_pretrained`` once ``autopeft`` is
imported. Each wrapped layer keeps the frozen base layer and a trained copy of its bias; merging
writes that bias back. Families whose layers have no bias (Llama, Mistral, Gemma, Phi-3) have
nothing for BitFit to train in those groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import PeftType
from pydantic import Field, field_validator
from torch import nn

from ..types import SpaceError, Strict, layers_text
from .base import Method, check_groups, known_groups, register_method
from .peft_registry import add_peft_type, create_or_update, register

add_peft_type("BITFIT")


@dataclass
class BitFitConfig(PeftConfig):
    """Which layers' biases train (a regular expression over module paths)."""

    target_modules: str | None = field(default=None)
    fan_in_fan_out: bool = field(default=False)  # Conv1D weights, stored (in, out)
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType["BITFIT"]


class BitFitLayer(nn.Module, BaseTunerLayer):
    """A linear (or Conv1D) layer whose bias is a trained copy of the base layer's."""

    adapter_layer_names = ("bitfit_bias",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, fan_in_fan_out: bool):
        super().__init__()
        if getattr(base_layer, "bias", None) is None:
            raise ValueError(f"BitFit needs a layer with a bias; {type(base_layer).__name__} has none")
        self.base_layer = base_layer
        self.fan_in_fan_out = fan_in_fan_out
        self.bitfit_bias = nn.ParameterDict()
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, fan_in_fan_out)

    def update_layer(self, adapter_name: str, fan_in_fan_out: bool) -> None:
        self.bitfit_bias[adapter_name] = nn.Parameter(self.base_layer.bias.detach().clone())
        self.set_adapter(self.active_adapters)

    def merge(self, *args, **kwargs) -> None:
        for name in self.active_adapters:
            if name in self.bitfit_bias:
                self.base_layer.bias.data.copy_(self.bitfit_bias[name].data)
                self.merged_adapters.append(name)

    def unmerge(self) -> None:
        self.merged_adapters.clear()

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        active = [n for n in self.active_adapters if n in self.bitfit_bias]
        if self.disable_adapters or self.merged or not active:
            return self.base_layer(x, *args, **kwargs)
        weight = self.base_layer.weight
        without_bias = x @ weight if self.fan_in_fan_out else nn.functional.linear(x, weight)
        return without_bias + self.bitfit_bias[active[-1]].to(without_bias.dtype)  # a bf16 base's dtype, under autocast


class BitFitModel(BaseTuner):
    """peft tuner that wraps the layers a ``BitFitConfig`` names."""

    prefix: str = "bitfit_"
    tuner_layer_cls = BitFitLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        create_or_update(self, BitFitLayer, target, target_name, parent, adapter_name, peft_config.fan_in_fan_out)


register("bitfit", BitFitConfig, BitFitModel)


@dataclass(frozen=True)
class BitFit:
    method: ClassVar[str] = "bitfit"
    groups: tuple[str, ...]
    layers: tuple[int, ...]


class BitFitSpace(Strict):
    groups: list[str] = Field(min_length=1)
    optional: bool = True

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        return known_groups(groups)


def _biased(shape) -> tuple[str, ...]:
    return tuple(g for g in shape.group_dims if g in shape.group_biases)


class BitFitMethod(Method):
    name = "bitfit"
    title = "BitFit"
    part = BitFit
    space = BitFitSpace
    order = 25
    peft_type = "BITFIT"
    parameter_prefix = "bitfit_"
    learning_rate_scale = 10.0  # only biases train, as with IA3 and VeRA
    baselines = {"bitfit": lambda s: (BitFit(_biased(s), tuple(range(s.num_layers))),)}

    def check(self, spec: BitFitSpace, shape, alone: bool) -> None:
        check_groups(spec.groups, shape, "modules.bitfit.groups")
        bare = [g for g in spec.groups if g not in shape.group_biases]
        if bare:
            raise SpaceError("modules.bitfit.groups", f"{', '.join(bare)} layers of {shape.family.name} models have no bias",
                             f"use groups with a bias: {', '.join(_biased(shape)) or 'this model has none'}")

    def dimensions(self, spec: BitFitSpace, shape) -> list[tuple[str, tuple]]:
        return [("bitfit", (0, 1) if spec.optional else (1,))]

    def groups(self, spec: BitFitSpace, shape) -> set[str]:
        return set(spec.groups)

    def part_groups(self, part: BitFit) -> set[str]:
        return set(part.groups)

    def fits(self, family, part=None) -> bool:
        return super().fits(family, part) and (part is None or bool(part.groups))

    def decode(self, spec: BitFitSpace, value, layers, shape) -> BitFit | None:
        return BitFit(tuple(spec.groups), layers) if value.get("bitfit", 1) and layers else None

    def smallest(self, spec: BitFitSpace, shape, layers) -> BitFit:
        return BitFit(tuple(spec.groups), layers)

    def count(self, part: BitFit, shape) -> int:
        return sum(shape.group_dims[g][1] for g in part.groups) * len(part.layers)

    def layers(self, part: BitFit, shape) -> set[int]:
        return set(part.layers)

    def peft_kwargs(self, part: BitFit, shape) -> dict:
        family = shape.family
        return {"target_modules": r"(?:.*\.)?(?:" + "|".join(family.pattern(g, part.layers) for g in part.groups) + ")",
                "fan_in_fan_out": family.fan_in_fan_out}

    def describe(self, part: BitFit) -> str:
        return f"bitfit {'+'.join(part.groups)} @{layers_text(part.layers)}"


register_method(BitFitMethod())
