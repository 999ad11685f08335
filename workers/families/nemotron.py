"""Nemotron, Arcee (AFM) and Apertus: Llama's attention (q/k/v/o, grouped-query) with an ungated MLP of
up_proj (``ffn_in``) and down_proj (``ffn_out``), its activation a squared ReLU or xIELU."""

from dataclasses import replace

from .base import register_family
from .llama import LLAMA

NEMOTRON = register_family(replace(
    LLAMA, name="nemotron", model_types=("nemotron", "arcee", "apertus"),
    groups={g: LLAMA.groups[g] for g in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")},
))
