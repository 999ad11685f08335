"""BLOOM: Falcon's layout (fused query_key_value, ``dense``, dense_h_to_4h, dense_4h_to_h), with
ALiBi position biases computed in the attention and no key/value cache of the kind a prefix
extends, so prefixes do not fit; every other method does. Its attention is its own code, not a
fused kernel, so it keeps its score rows on a GPU too."""

from dataclasses import replace

from .base import register_family
from .falcon import FALCON

BLOOM = register_family(replace(
    FALCON,
    name="bloom",
    model_types=("bloom",),
    blocks={"ffn_output": "mlp", "attention_output": "self_attention"},
    fused_attention=False,
))
