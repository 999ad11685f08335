"""Falcon: one fused query_key_value projection (multi-query or grouped-query: its keys and values
may be one head wide), ``dense`` as the attention's output, and an ungated MLP (dense_h_to_4h,
dense_4h_to_h), by default beside the attention on the same input."""

from .base import Family, register_family

FALCON = register_family(Family(
    name="falcon",
    model_types=("falcon",),
    layers_path="transformer.h",
    groups={
        "query_key_value": "self_attention.query_key_value",
        "attention_output": "self_attention.dense",
        "ffn_in": "mlp.dense_h_to_4h",
        "ffn_out": "mlp.dense_4h_to_h",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attention", "self_attention": "self_attention"},
))
