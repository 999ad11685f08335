"""BLOOM: Falcon's layout (fused query_key_value, ``dense``, dense_h_to_4h, dense_4h_to_h), with
ALiBi position biases computed in the attention and no key/value cache of the kind a prefix
extends, so prefixes do not fit; every other method does. Its attention is its own code, not a
fused kernel, so it keeps its score rows on a GPU too."""

from .base import Family, register_family

BLOOM = register_family(Family(
    name="bloom",
    model_types=("bloom",),
    layers_path="transformer.h",
    groups={
        "query_key_value": "self_attention.query_key_value",
        "attention_output": "self_attention.dense",
        "ffn_in": "mlp.dense_h_to_4h",
        "ffn_out": "mlp.dense_4h_to_h",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attention"},
    fused_attention=False,
))
