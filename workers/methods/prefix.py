"""Prefix tuning as a peft tuner method (``KV_PREFIX``), so it combines with LoRA, IA3 and adapters.

peft's own prefix tuning feeds ``past_key_values`` for every layer at once and cannot share a model
with tuner methods. This one wraps each chosen self-attention module and hands it a key/value
cache that prepends learned key and value vectors (``length`` per layer, no reparameterisation)
to the keys and values the module computes, as peft's prefix does: after the rotary embedding,
so prefix positions carry no rotation. Every query sees every prefix position; the attention
mask is widened to match, and a causal module's implicit mask is made explicit, aligned to the
end. Under grouped-query attention a prefix has the key/value heads' width, so a layer trains
``2 * length * kv_heads * head_dim`` parameters (``2 * length * hidden`` without it). The same
cache carries a real one through generation, so cached decoding sees the prefix at every step.
The search space names it ``prefix``.
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

from ..models import kv_heads, takes_kv_cache
from ..types import LayerSizes, sizes_text
from .base import every_layer, register_method
from .peft_registry import add_peft_type, create_or_update, register
from .sized import SizedMethod

add_peft_type("KV_PREFIX")


def prefix_params(kv_width: int, length: int) -> int:
    return 2 * kv_width * max(0, length)


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
        self.target_modules = rf"(?:.*\.)?{re.escape(self.layers_path)}\.(?:{layers})\.{re.escape(self.attention_module)}"

    def length_for(self, key: str) -> int:
        layer = re.search(rf"{re.escape(self.layers_path)}\.(\d+)\.", key).group(1)
        return self.lengths.get(layer, 0)


class PrefixedCache:
    """A key/value cache for one forward call: prepends the prefix to what ``update`` returns.

    It carries the model's own cache (``inner``, None when training) through, so the real cache
    holds only the real tokens and the prefix is prepended at every decoding step.
    """

    def __init__(self, inner, keys: torch.Tensor, values: torch.Tensor):
        self.inner, self.keys, self.values = inner, keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.inner is not None:
            key_states, value_states = self.inner.update(key_states, value_states, layer_idx, *args, **kwargs)
        keys = self.keys.to(key_states.dtype).expand(key_states.shape[0], -1, -1, -1)
        values = self.values.to(value_states.dtype).expand(value_states.shape[0], -1, -1, -1)
        return torch.cat([keys, key_states], dim=2), torch.cat([values, value_states], dim=2)

    def __getattr__(self, name: str):
        if name == "inner" or self.inner is None:
            raise AttributeError(name)
        return getattr(self.inner, name)


def widen_mask(mask: torch.Tensor | None, extra: int, queries: int, past: int, causal: bool, device) -> torch.Tensor | None:
    """The attention mask with ``extra`` visible prefix positions in front of the ``past + queries`` keys.

    A causal module without a mask (the attention kernel's own causal flag) gets an explicit
    causal mask aligned to the last key, which the kernel's flag would misplace with a prefix.
    """
    if mask is None:
        if not causal or queries == 1:
            return None
        keys = past + queries
        causal_part = torch.ones(queries, keys, dtype=torch.bool, device=device).tril(diagonal=past)
        visible = torch.ones(queries, extra, dtype=torch.bool, device=device)
        return torch.cat([visible, causal_part], dim=-1)[None, None]
    pad_shape = (*mask.shape[:-1], extra)
    pad = torch.ones(pad_shape, dtype=torch.bool, device=mask.device) if mask.dtype == torch.bool \
        else torch.zeros(pad_shape, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


CACHE_ARGUMENTS = ("cache", "past_key_values", "layer_past")  # what an attention module calls its key/value cache


class KVPrefixLayer(nn.Module, BaseTunerLayer):
    """A self-attention module (BERT's or a decoder's) whose keys and values start with learned prefixes."""

    adapter_layer_names = ("kv_prefix_key", "kv_prefix_value")

    def __init__(self, base_layer: nn.Module, adapter_name: str, length: int, config: KVPrefixConfig):
        super().__init__()
        attention = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        if not takes_kv_cache(attention):
            raise ValueError(f"prefix tuning needs a self-attention module with a key/value cache; "
                             f"{type(attention).__name__} has none")
        self.base_layer = base_layer
        self.attention = attention  # the attention module itself, under any adapter wrapped around it
        self.kv_prefix_key = nn.ParameterDict()
        self.kv_prefix_value = nn.ParameterDict()
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self._signature = inspect.signature(attention.forward)
        self._cache_argument = next((n for n in CACHE_ARGUMENTS if n in self._signature.parameters), "cache")
        self.update_layer(adapter_name, length, config)

    def update_layer(self, adapter_name: str, length: int, config: KVPrefixConfig) -> None:
        heads, head_dim = kv_heads(self.attention.config)
        self.kv_prefix_key[adapter_name] = nn.Parameter(torch.randn(length, heads * head_dim) * config.init_std)
        self.kv_prefix_value[adapter_name] = nn.Parameter(torch.randn(length, heads * head_dim) * config.init_std)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, *args, **kwargs) -> None:
        raise ValueError("a prefix lengthens attention and cannot be merged into the base weights")

    def unmerge(self) -> None:
        return None

    def _prefix(self, parameters: nn.ParameterDict, active: list[str]) -> torch.Tensor:
        """The active adapters' prefixes as (1, kv_heads, length, head_dim)."""
        heads, head_dim = kv_heads(self.attention.config)
        return torch.cat([parameters[n].view(1, -1, heads, head_dim).transpose(1, 2) for n in active], dim=2)

    def forward(self, *args, **kwargs):
        attention = self.attention
        active = [n for n in self.active_adapters if n in self.kv_prefix_key] if not self.disable_adapters else []
        if not active:
            return self.base_layer(*args, **kwargs)
        cache = self._cache_argument
        for name in CACHE_ARGUMENTS:
            if name != cache and name in kwargs and name not in self._signature.parameters:
                kwargs[cache] = kwargs.pop(name)
        call = self._signature.bind(*args, **kwargs)
        hidden_states = call.arguments["hidden_states"]
        inner = call.arguments.get(cache)
        keys, values = self._prefix(self.kv_prefix_key, active), self._prefix(self.kv_prefix_value, active)
        past = inner.get_seq_length(attention.layer_idx) if inner is not None else 0
        call.arguments["attention_mask"] = widen_mask(
            call.arguments.get("attention_mask"), keys.shape[2], hidden_states.shape[1], past,
            bool(getattr(attention, "is_causal", False)), hidden_states.device)
        call.arguments[cache] = PrefixedCache(inner, keys, values)
        return self.base_layer(*call.args, **call.kwargs)


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
    learning_rate_scale = 10.0  # prefixes train at about ten times LoRA's rate in P-tuning v2
    baselines = {"prefix-10": lambda s: (Prefix(every_layer(s, 10)),)}

    def make(self, spec, sizes: LayerSizes) -> Prefix:
        return Prefix(sizes)

    def count(self, part: Prefix, shape) -> int:
        return sum(prefix_params(shape.kv_width, length) for _, length in part.lengths)

    def layers(self, part: Prefix, shape) -> set[int]:
        return {layer for layer, _ in part.lengths}

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
