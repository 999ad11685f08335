"""Phi-3: fused projections, qkv_proj (``query_key_value``) and gate_up_proj (``ffn_gate_in``)."""

from .base import Family, register_family

PHI3 = register_family(Family(
    name="phi3",
    model_types=("phi3",),
    layers_path="model.layers",
    groups={
        "query_key_value": "self_attn.qkv_proj",
        "attention_output": "self_attn.o_proj",
        "ffn_gate_in": "mlp.gate_up_proj",
        "ffn_out": "mlp.down_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
