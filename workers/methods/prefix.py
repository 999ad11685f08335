"""Prefix tuning as a peft tuner method (``KV_PREFIX``), so it combines with LoRA, IA3 and adapters.

peft's own prefix tuning feeds ``past_key_values`` and cannot share a model with tuner methods.
This one wraps each chosen self-attention module and prepends learned key and value vectors
(``length`` per layer, no reparameterisation): ``2 * length * hidden`` parameters per layer.
The search space names it ``prefix``: one length for every chosen layer.
"""

from __future__ import annotations

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
from .sized import SizedMethod

add_peft_type("KV_PREFIX")


def prefix_params(hidden: int, length: int) -> int:
    return 2 * hidden * max(0, length)


@dataclass
class KVPrefixConfig(PeftConfig):
    """Prefix lengths per layer (layer index -> length; 0 or absent = no prefix)."""

    layers_path: str = field(default="encoder.layer")
    attention_module: str = field(default="attention.self")
    lengths: dict[str, int] = field(default_factory=dict)
    init_std: float = field(default=0.02)
    target_modules: str | None = field(default=None)
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType["KV_PREFIX"]
        self.lengths = {str(k): int(v) for k, v in self.lengths.items() if int(v) > 0}
        if not self.lengths:
            raise ValueError("a prefix config needs at least one layer with length > 0")
        layers = "|".join(sorted(self.lengths, key=int))
        self.target_modules = rf".*\.{re.escape(self.layers_path)}\.(?:{layers})\.{re.escape(self.attention_module)}"

    def length_for(self, key: str) -> int:
        layer = re.search(rf"{re.escape(self.layers_path)}\.(\d+)\.", key).group(1)
        return self.lengths.get(layer, 0)


class KVPrefixLayer(nn.Module, BaseTunerLayer):
    """A BERT-style self-attention whose keys and values start with learned prefix vectors."""

    adapter_layer_names = ("kv_prefix_key", "kv_prefix_value")

    def __init__(self, base_layer: nn.Module, adapter_name: str, length: int, config: KVPrefixConfig):
        super().__init__()
        for attribute in ("query", "key", "value", "attention_head_size", "scaling", "config"):
            if not hasattr(base_layer, attribute):
                raise ValueError(f"prefix tuning needs a BERT-style self-attention; {type(base_layer).__name__} has no {attribute}")
        self.base_layer = base_layer
        self.kv_prefix_key = nn.ParameterDict()
        self.kv_prefix_value = nn.ParameterDict()
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, length, config)

    def update_layer(self, adapter_name: str, length: int, config: KVPrefixConfig) -> None:
        hidden = self.base_layer.config.hidden_size
        self.kv_prefix_key[adapter_name] = nn.Parameter(torch.randn(length, hidden) * config.init_std)
        self.kv_prefix_value[adapter_name] = nn.Parameter(torch.randn(length, hidden) * config.init_std)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, *args, **kwargs) -> None:
        raise ValueError("a prefix lengthens attention and cannot be merged into the base weights")

    def unmerge(self) -> None:
        return None

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.bert.modeling_bert import eager_attention_forward

        base = self.base_layer
        active = [n for n in self.active_adapters if n in self.kv_prefix_key] if not self.disable_adapters else []
        if not active:
            return base(hidden_states, attention_mask, *args, **kwargs)
        kwargs.pop("past_key_values", None)
        batch, seq = hidden_states.shape[:2]
        shape = (batch, seq, -1, base.attention_head_size)
        query = base.query(hidden_states).view(shape).transpose(1, 2)
        key = base.key(hidden_states).view(shape).transpose(1, 2)
        value = base.value(hidden_states).view(shape).transpose(1, 2)
        heads = key.shape[1]
        prefix_keys, prefix_values = [], []
        for name in active:
            length = self.kv_prefix_key[name].shape[0]
            as_heads = (1, length, heads, base.attention_head_size)
            prefix_keys.append(self.kv_prefix_key[name].view(as_heads).transpose(1, 2).expand(batch, -1, -1, -1))
            prefix_values.append(self.kv_prefix_value[name].view(as_heads).transpose(1, 2).expand(batch, -1, -1, -1))
        key = torch.cat([*(p.to(key.dtype) for p in prefix_keys), key], dim=2)
        value = torch.cat([*(p.to(value.dtype) for p in prefix_values), value], dim=2)
        extra = key.shape[2] - seq
        if attention_mask is not None:
            pad_shape = (*attention_mask.shape[:-1], extra)
            if attention_mask.dtype == torch.bool:
                pad = torch.ones(pad_shape, dtype=torch.bool, device=attention_mask.device)
            else:
                pad = torch.zeros(pad_shape, dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([pad, attention_mask], dim=-1)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation, eager_attention_forward)
        output, weights = interface(
            base, query, key, value, attention_mask,
            dropout=0.0 if not self.training else base.dropout.p, scaling=base.scaling, **kwargs,
        )
        return output.reshape(batch, seq, -1).contiguous(), weights


class KVPrefixModel(BaseTuner):
    """peft tuner that adds key/value prefixes to the self-attention modules a ``KVPrefixConfig`` names."""

    prefix: str = "kv_prefix_"
    tuner_layer_cls = KVPrefixLayer
    target_module_mapping: dict = {}

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        length = peft_config.length_for(current_key)
        create_or_update(self, KVPrefixLayer, target, target_name, parent, adapter_name, length, peft_config)


register("kv_prefix", KVPrefixConfig, KVPrefixModel)


@dataclass(frozen=True)
class Prefix:
    method: ClassVar[str] = "prefix"
    lengths: LayerSizes


class PrefixMethod(SizedMethod):
    name = "prefix"
    title = "prefix"
    part = Prefix
    order = 60
    peft_type = "KV_PREFIX"
    parameter_prefix = "kv_prefix_"
    mergeable = False
    requires = frozenset({"self_attention"})
    bounded_by_width = False
    baselines = {"prefix-10": lambda s: (Prefix(every_layer(s, 10)),)}

    def make(self, spec, sizes: LayerSizes) -> Prefix:
        return Prefix(sizes)

    def count(self, part: Prefix, shape) -> int:
        return sum(prefix_params(shape.hidden_size, length) for _, length in part.lengths)

    def peft_kwargs(self, part: Prefix, shape) -> dict:
        family = shape.family
        return {"layers_path": family.layers_path, "attention_module": family.blocks["self_attention"],
                "lengths": {str(layer): size for layer, size in part.lengths}}

    def describe(self, part: Prefix) -> str:
        return sizes_text(self.name, part.lengths)

    def from_legacy(self, data) -> Prefix | None:
        lengths = tuple((int(a), int(b)) for a, b in data.get("prefix", []))
        return Prefix(lengths) if lengths else None


register_method(PrefixMethod())
