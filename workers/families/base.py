"""What a model family is to autopeft: one descriptor per family, registered by model type.

A family says where a model's transformer layers are, where each module group lives in a layer,
and which blocks it has for the methods that wrap whole blocks (``Method.requires``). Module
groups are one vocabulary for every family (``MODULE_GROUPS``); a family maps those it has.
A model whose type no family names is recognised by its structure: the first family whose
layers and module groups it has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MODULE_GROUPS = {
    "query": "the attention's query projection",
    "key": "the attention's key projection (narrower than the hidden size under grouped-query attention)",
    "value": "the attention's value projection",
    "query_key_value": "the attention's fused query, key and value projection (GPT-2's c_attn, Phi-3's qkv_proj)",
    "attention_output": "the attention's output projection",
    "ffn_gate": "the gated MLP's gate projection (gate_proj)",
    "ffn_in": "the MLP's input projection (BERT's intermediate, up_proj, GPT-2's c_fc)",
    "ffn_gate_in": "the gated MLP's fused gate and input projection (Phi-3's gate_up_proj)",
    "ffn_out": "the MLP's output projection (BERT's output.dense, down_proj, GPT-2's mlp.c_proj)",
}
FUSED_INTO = {  # a group some families fuse into a wider projection: where it lives there
    "query": "query_key_value",
    "key": "query_key_value",
    "value": "query_key_value",
    "ffn_gate": "ffn_gate_in",
    "ffn_in": "ffn_gate_in",
}
BLOCKS = {  # where block-level methods go: bottleneck adapters (ffn_output, attention_output), prefixes
    "ffn_output": "the FFN: a BERT-style output block (dense, dropout, LayerNorm with the residual) or a decoder's MLP",
    "attention_output": "the attention: a BERT-style output block, or a decoder's attention module",
    "self_attention": "the self-attention module, which computes keys and values and updates the key/value cache",
}


@dataclass(frozen=True)
class Family:
    """Where the module groups of one model family live, relative to the model root."""

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    groups: dict[str, str]  # MODULE_GROUPS key -> path within a layer
    blocks: dict[str, str] = field(default_factory=dict)  # BLOCKS key -> path within a layer
    fan_in_fan_out: bool = False  # weights stored (in, out), as GPT-2's Conv1D
    pooler: str = "pooler"  # the module between the encoder and the classifier that peft leaves frozen
    fused_attention: bool = True  # on CUDA its attention runs in a fused kernel, which keeps no score rows
    decoder: bool = True  # its attention is causal, and it generates; an encoder's sees the whole text at once
    frozen: tuple[str, ...] = ()  # modules a text task never reaches, which no plan trains, full fine-tuning included

    def __post_init__(self):
        if not set(self.groups) <= set(MODULE_GROUPS) or not {"attention_output", "ffn_out"} <= set(self.groups):
            raise ValueError(f"family '{self.name}' maps groups among {tuple(MODULE_GROUPS)}, attention_output and ffn_out included")
        if not set(self.blocks) <= set(BLOCKS):
            raise ValueError(f"family '{self.name}' maps blocks among {tuple(BLOCKS)}")

    def matches(self, module_names: set[str]) -> bool:
        """Whether a model with these module names is built like this family: every one of its layers
        has every module group (a mixture of experts whose first layers are dense does not)."""
        alike, layers = self.layers_alike(module_names)
        return bool(layers) and alike == layers

    def layers_alike(self, module_names: set[str]) -> tuple[int, int]:
        """(layers built like this family's, layers) of a model with these module names: a hybrid model, or a
        mixture of experts with dense layers, has some of one and not all."""
        layer = re.compile(rf"(?:.*\.)?{re.escape(self.layers_path)}\.\d+")
        layers = [n for n in module_names if layer.fullmatch(n)]
        return sum(all(f"{n}.{path}" in module_names for path in self.groups.values()) for n in layers), len(layers)

    def holder(self, group: str) -> str:
        """The group of this family that holds ``group``: itself, or the fused projection it is part of
        here (GPT-2's query and value live in ``query_key_value``)."""
        fused = FUSED_INTO.get(group)
        return fused if group not in self.groups and fused in self.groups else group

    def holders(self, groups) -> tuple[str, ...]:
        """``groups`` as this family has them, each once: a fused projection in place of the groups it
        holds, and a group it has in no form left out."""
        return tuple(dict.fromkeys(h for h in map(self.holder, groups) if h in self.groups))

    def pattern(self, group: str, layers: tuple[int, ...] | None = None) -> str:
        """A regular expression for the module of ``group`` in ``layers`` (every layer when None)."""
        layer = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
        return rf"{re.escape(self.layers_path)}\.{layer}\.{re.escape(self.groups[group])}"


FAMILIES: dict[str, Family] = {}  # by model type
BY_NAME: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    BY_NAME[family.name] = family
    for model_type in family.model_types:
        if model_type in FAMILIES:
            raise ValueError(f"model type '{model_type}' belongs to two families")
        FAMILIES[model_type] = family
    return family


def recognise(model_type: str, module_names: set[str]) -> Family | None:
    """The family of a model: by its type, else by its structure, the family that finds the most module groups in
    it (Llama's gated MLP holds the ungated MLP's groups, and a gate besides); None when no family fits."""
    if model_type in FAMILIES and FAMILIES[model_type].matches(module_names):
        return FAMILIES[model_type]
    return max((f for f in BY_NAME.values() if f.matches(module_names)), key=lambda f: len(f.groups), default=None)
