"""Bottleneck adapters as a peft method: serial (Houlsby / Pfeiffer) and parallel (He et al., 2022).

Registered with ``peft.utils.register_peft_method`` under the type ``BOTTLENECK``, so
``get_peft_model``, ``save_pretrained`` and ``PeftModel.from_pretrained`` work as for any
peft method once ``workers`` (or ``autopeft``) is imported.

An adapter wraps a BERT-style output block (``dense``, ``dropout``, ``LayerNorm`` and a
residual input): the FFN output block, and for Houlsby placement also the attention output
block. Serial: ``h = h + up(act(down(h)))`` after the block's projection. Parallel (FFN only):
``h = h + s * up(act(down(x)))`` where ``x`` is the FFN's input. Up-projections start at zero,
so a new adapter is the identity. Sizes are per layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import PeftType
from torch import nn

from workers.methods.registry import add_peft_type, register

add_peft_type("BOTTLENECK")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def adapter_params(hidden: int, size: int) -> int:
    """Parameters of one bottleneck adapter of ``size`` on a width-``hidden`` stream (with biases)."""
    return 0 if size <= 0 else 2 * hidden * size + size + hidden


@dataclass
class BottleneckConfig(PeftConfig):
    """Where bottleneck adapters go and how large each is (layer index -> size, 0 or absent = none)."""

    layers_path: str = field(default="encoder.layer")
    ffn_block: str = field(default="output")
    attention_block: str = field(default="attention.output")
    serial_ffn: dict[str, int] = field(default_factory=dict)
    serial_attention: dict[str, int] = field(default_factory=dict)
    parallel_ffn: dict[str, int] = field(default_factory=dict)
    parallel_scaling: float = field(default=4.0)
    non_linearity: str = field(default="relu")
    target_modules: str | None = field(default=None)
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType["BOTTLENECK"]
        for name in ("serial_ffn", "serial_attention", "parallel_ffn"):
            setattr(self, name, {str(k): int(v) for k, v in getattr(self, name).items() if int(v) > 0})
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {sorted(ACTIVATIONS)}")
        ffn_layers = sorted({*self.serial_ffn, *self.parallel_ffn}, key=int)
        attention_layers = sorted(self.serial_attention, key=int)
        parts = []
        if ffn_layers:
            parts.append(self._pattern(ffn_layers, self.ffn_block))
        if attention_layers:
            parts.append(self._pattern(attention_layers, self.attention_block))
        if not parts:
            raise ValueError("a bottleneck config needs at least one adapter of size > 0")
        self.target_modules = r".*\.(?:" + "|".join(parts) + ")"

    def _pattern(self, layers: list[str], block: str) -> str:
        return rf"{re.escape(self.layers_path)}\.(?:{'|'.join(layers)})\.{re.escape(block)}"

    def sizes_for(self, key: str) -> tuple[int, int]:
        """(serial, parallel) sizes for the block at module path ``key``."""
        match = re.search(rf"{re.escape(self.layers_path)}\.(\d+)\.(.+)$", key)
        layer, block = match.group(1), match.group(2)
        if block == self.attention_block:
            return self.serial_attention.get(layer, 0), 0
        return self.serial_ffn.get(layer, 0), self.parallel_ffn.get(layer, 0)


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """A BERT-style output block with serial and/or parallel bottleneck adapters."""

    adapter_layer_names = ("bottleneck_serial", "bottleneck_parallel")
    other_param_names = ("bottleneck_scaling",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, serial: int, parallel: int, config: BottleneckConfig):
        super().__init__()
        for attribute in ("dense", "dropout", "LayerNorm"):
            if not hasattr(base_layer, attribute):
                raise ValueError(f"bottleneck adapters need a BERT-style output block; {type(base_layer).__name__} has no {attribute}")
        self.base_layer = base_layer
        self.bottleneck_serial = nn.ModuleDict()
        self.bottleneck_parallel = nn.ModuleDict()
        self.bottleneck_scaling: dict[str, float] = {}
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, serial, parallel, config)

    @staticmethod
    def _bottleneck(hidden: int, size: int, activation: str) -> nn.Sequential:
        up = nn.Linear(size, hidden)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        return nn.Sequential(nn.Linear(hidden, size), ACTIVATIONS[activation](), up)

    def update_layer(self, adapter_name: str, serial: int, parallel: int, config: BottleneckConfig) -> None:
        hidden = self.base_layer.dense.out_features
        if serial > 0:
            self.bottleneck_serial[adapter_name] = self._bottleneck(hidden, serial, config.non_linearity)
        if parallel > 0:
            self.bottleneck_parallel[adapter_name] = self._bottleneck(hidden, parallel, config.non_linearity)
        self.bottleneck_scaling[adapter_name] = config.parallel_scaling
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, *args, **kwargs) -> None:
        raise ValueError("bottleneck adapters add a non-linear path and cannot be merged into the base weights")

    def unmerge(self) -> None:
        return None

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.base_layer
        if self.disable_adapters:
            return base(hidden_states, input_tensor, *args, **kwargs)
        h = base.dropout(base.dense(hidden_states))
        for name in self.active_adapters:
            if name in self.bottleneck_serial:
                h = h + self.bottleneck_serial[name](h)
        for name in self.active_adapters:
            if name in self.bottleneck_parallel:
                h = h + self.bottleneck_scaling[name] * self.bottleneck_parallel[name](input_tensor)
        return base.LayerNorm(h + input_tensor)


class BottleneckModel(BaseTuner):
    """peft tuner that wraps the output blocks a ``BottleneckConfig`` names."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        serial, parallel = peft_config.sizes_for(current_key)
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, serial, parallel, peft_config)
            return
        new_module = BottleneckLayer(target, adapter_name, serial, parallel, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


register("bottleneck", BottleneckConfig, BottleneckModel)
