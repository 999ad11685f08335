"""Bottleneck adapters as a peft method: serial (Houlsby / Pfeiffer) and parallel (He et al., 2022).

Registered with ``peft.utils.register_peft_method`` under the type ``BOTTLENECK``, so
``get_peft_model``, ``save_pretrained`` and ``PeftModel.from_pretrained`` work as for any
peft method once ``autopeft`` is imported. The search space has two methods on this one tuner,
``serial`` and ``parallel``; a plan with both builds one ``BottleneckConfig``.

An adapter wraps the FFN block, and for Houlsby placement also the attention block. In a
BERT-style encoder that is the block's output (``dense``, ``dropout``, a residual input and
``LayerNorm``; pre-norm BERTs such as ESM and XLM-R XL have no norm there): serial
``h = h + up(act(down(h)))`` after the block's projection, before its residual and LayerNorm;
parallel (FFN only) ``h = h + s * up(act(down(x)))`` where ``x`` is the FFN's input. In a
decoder it is the whole MLP or attention module, inside the layer's residual: serial on the
module's output, parallel on its input. Up-projections start at zero, so a new adapter is the
identity. Sizes are per layer.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import PeftType
from torch import nn

from ..types import LayerSizes, sizes_text
from .base import every_layer, register_method
from .peft_registry import add_peft_type, create_or_update, register
from .prefix import Prefix
from .sized import SizedMethod, SizedSpace

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
    hidden_size: int | None = field(default=None)  # the residual stream's width (read from the block when it has ``dense``)
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
        self.target_modules = r"(?:.*\.)?(?:" + "|".join(parts) + ")"

    def _pattern(self, layers: list[str], block: str) -> str:
        return rf"{re.escape(self.layers_path)}\.(?:{'|'.join(layers)})\.{re.escape(block)}"

    def sizes_for(self, key: str) -> tuple[int, int]:
        """(serial, parallel) sizes for the block at module path ``key``."""
        match = re.search(rf"{re.escape(self.layers_path)}\.(\d+)\.(.+)$", key)
        layer, block = match.group(1), match.group(2)
        if block == self.attention_block:
            return self.serial_attention.get(layer, 0), 0
        return self.serial_ffn.get(layer, 0), self.parallel_ffn.get(layer, 0)


def is_output_block(layer: nn.Module) -> bool:
    """Whether ``layer`` is a BERT-style output block: ``forward(hidden_states, input_tensor)`` is ``dense``, its
    ``dropout`` where it has one, the residual ``input_tensor`` added, then its ``LayerNorm`` where it has one."""
    named = [p for p in inspect.signature(layer.forward).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return hasattr(layer, "dense") and len(named) == 2


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """An FFN or attention block with serial and/or parallel bottleneck adapters."""

    adapter_layer_names = ("bottleneck_serial", "bottleneck_parallel")
    other_param_names = ("bottleneck_scaling",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, serial: int, parallel: int, config: BottleneckConfig):
        super().__init__()
        self.output_block = is_output_block(base_layer)
        if not self.output_block and config.hidden_size is None:
            raise ValueError(f"bottleneck adapters around {type(base_layer).__name__} need the config's hidden_size")
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
        hidden = self.base_layer.dense.out_features if self.output_block else config.hidden_size
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

    def _adapt(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``h`` through the serial adapters, plus the parallel adapters of ``x``."""
        for name in self.active_adapters:
            if name in self.bottleneck_serial:
                h = h + self.bottleneck_serial[name](h)
        for name in self.active_adapters:
            if name in self.bottleneck_parallel:
                h = h + self.bottleneck_scaling[name] * self.bottleneck_parallel[name](x)
        return h

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        base = self.base_layer
        if self.disable_adapters:
            return base(hidden_states, *args, **kwargs)
        if self.output_block:  # (hidden_states, input_tensor): the residual input is the FFN's input
            input_tensor = args[0] if args else next(iter(kwargs.values()))  # input_tensor, or Megatron-BERT's residual
            h = base.dense(hidden_states)
            h = self._adapt(base.dropout(h) if hasattr(base, "dropout") else h, input_tensor) + input_tensor
            return base.LayerNorm(h) if hasattr(base, "LayerNorm") else h
        out = base(hidden_states, *args, **kwargs)
        if isinstance(out, (tuple, list)):  # an attention module: (output, weights, ...); OpenAI GPT's is a list
            return type(out)([self._adapt(out[0], hidden_states), *out[1:]])
        return self._adapt(out, hidden_states)


class BottleneckModel(BaseTuner):
    """peft tuner that wraps the output blocks a ``BottleneckConfig`` names."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        serial, parallel = peft_config.sizes_for(current_key)
        create_or_update(self, BottleneckLayer, target, target_name, parent, adapter_name, serial, parallel, peft_config)


register("bottleneck", BottleneckConfig, BottleneckModel)


@dataclass(frozen=True)
class Serial:
    method: ClassVar[str] = "serial"
    ffn: LayerSizes
    attention: LayerSizes = ()


@dataclass(frozen=True)
class Parallel:
    method: ClassVar[str] = "parallel"
    ffn: LayerSizes
    scaling: float = 4.0


class SerialSpace(SizedSpace):
    attention: bool = False  # Houlsby placement: an adapter after the attention block too


class ParallelSpace(SizedSpace):
    scaling: float = 4.0


def _blocks(shape) -> dict:
    family = shape.family
    blocks = {"layers_path": family.layers_path, "ffn_block": family.blocks["ffn_output"], "hidden_size": shape.hidden_size}
    if "attention_output" in family.blocks:
        blocks["attention_block"] = family.blocks["attention_output"]
    return blocks


def _adapters(shape, *sizes: LayerSizes) -> int:
    return sum(adapter_params(shape.hidden_size, size) for layer_sizes in sizes for _, size in layer_sizes)


class SerialMethod(SizedMethod):
    """Serial adapters after the FFN's output projection (Pfeiffer), and after attention's too (Houlsby)."""

    name = "serial"
    title = "serial adapter"
    part = Serial
    space = SerialSpace
    order = 40
    peft_type = "BOTTLENECK"
    parameter_prefix = "bottleneck_"
    mergeable = False
    requires = frozenset({"ffn_output", "attention_output"})
    # Houlsby's adapters are width/12 (64 for BERT-base), Pfeiffer's width/16
    baselines = {"houlsby": lambda s: (Serial(every_layer(s, s.hidden_size // 12), every_layer(s, s.hidden_size // 12)),),
                 "pfeiffer": lambda s: (Serial(every_layer(s, s.hidden_size // 16)),)}

    def make(self, spec: SerialSpace, sizes: LayerSizes) -> Serial:
        return Serial(sizes, sizes if spec.attention else ())

    def count(self, part: Serial, shape) -> int:
        return _adapters(shape, part.ffn, part.attention)

    def layers(self, part: Serial, shape) -> set[int]:
        return {layer for layer, _ in (*part.ffn, *part.attention)}

    def peft_kwargs(self, part: Serial, shape) -> dict:
        return {**_blocks(shape), "serial_ffn": {str(i): s for i, s in part.ffn},
                "serial_attention": {str(i): s for i, s in part.attention}}

    def describe(self, part: Serial) -> str:
        texts = [sizes_text("serial", part.ffn)] if part.ffn else []
        return " | ".join(texts + ([sizes_text("serial-attn", part.attention)] if part.attention else []))

    def from_legacy(self, data) -> Serial | None:
        ffn, attention = (tuple((int(a), int(b)) for a, b in data.get(k, [])) for k in ("serial_ffn", "serial_attention"))
        return Serial(ffn, attention) if ffn or attention else None


class ParallelMethod(SizedMethod):
    """Parallel adapters beside the FFN, scaled (He et al., 2022)."""

    name = "parallel"
    title = "parallel adapter"
    part = Parallel
    space = ParallelSpace
    order = 50
    peft_type = "BOTTLENECK"
    parameter_prefix = "bottleneck_"
    mergeable = False
    requires = frozenset({"ffn_output"})
    # the parallel adapter at width/16; MAM: a parallel adapter of 2/3 the width beside a prefix of 30
    baselines = {"parallel": lambda s: (Parallel(every_layer(s, s.hidden_size // 16)),),
                 "mam": lambda s: (Prefix(every_layer(s, 30)), Parallel(every_layer(s, 2 * s.hidden_size // 3)))}

    def make(self, spec: ParallelSpace, sizes: LayerSizes) -> Parallel:
        return Parallel(sizes, spec.scaling)

    def count(self, part: Parallel, shape) -> int:
        return _adapters(shape, part.ffn)

    def layers(self, part: Parallel, shape) -> set[int]:
        return {layer for layer, _ in part.ffn}

    def peft_kwargs(self, part: Parallel, shape) -> dict:
        return {**_blocks(shape), "parallel_ffn": {str(i): s for i, s in part.ffn}, "parallel_scaling": part.scaling}

    def describe(self, part: Parallel) -> str:
        return sizes_text(self.name, part.ffn)

    def from_legacy(self, data) -> Parallel | None:
        ffn = tuple((int(a), int(b)) for a, b in data.get("parallel_ffn", []))
        return Parallel(ffn, float(data.get("parallel_scaling", 4.0))) if ffn else None


register_method(SerialMethod())
register_method(ParallelMethod())
