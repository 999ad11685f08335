"""What a model family is to autopeft: one descriptor per family, registered by model type.

A family says where a model's transformer layers are, where each module group lives in a layer
(one vocabulary for every family: query, key, value, attention_output, ffn_in, ffn_out), and
which blocks it has for the methods that wrap whole blocks (``Method.requires``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MODULE_GROUPS = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")
BLOCKS = {
    "ffn_output": "the FFN's output block (dense, dropout, LayerNorm with the residual)",
    "attention_output": "the attention's output block (dense, dropout, LayerNorm with the residual)",
    "self_attention": "a BERT-style self-attention (query, key, value)",
}


@dataclass(frozen=True)
class Family:
    """Where the module groups of one model family live, relative to the model root."""

    name: str
    model_types: tuple[str, ...]
    layers_path: str
    groups: dict[str, str]
    blocks: dict[str, str] = field(default_factory=dict)  # BLOCKS key -> path within a layer

    def __post_init__(self):
        if set(self.groups) != set(MODULE_GROUPS) or not set(self.blocks) <= set(BLOCKS):
            raise ValueError(f"family '{self.name}' must map the groups {MODULE_GROUPS} and blocks among {tuple(BLOCKS)}")

    def pattern(self, group: str, layers: tuple[int, ...] | None = None) -> str:
        """A regular expression for the module of ``group`` in ``layers`` (every layer when None)."""
        layer = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
        return rf"{re.escape(self.layers_path)}\.{layer}\.{re.escape(self.groups[group])}"


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    for model_type in family.model_types:
        if model_type in FAMILIES:
            raise ValueError(f"model type '{model_type}' belongs to two families")
        FAMILIES[model_type] = family
    return family
