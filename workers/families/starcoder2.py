"""StarCoder2: Llama's attention (q/k/v/o, grouped-query) with an ungated MLP (c_fc, c_proj)."""

from .base import Family, register_family

STARCODER2 = register_family(Family(
    name="starcoder2",
    model_types=("starcoder2",),
    layers_path="model.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.o_proj",
        "ffn_in": "mlp.c_fc",
        "ffn_out": "mlp.c_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
