"""GPT-2: Conv1D weights stored (in, out), and one fused c_attn for query, key and value."""

from .base import Family, register_family

GPT2 = register_family(Family(
    name="gpt2",
    model_types=("gpt2",),
    layers_path="transformer.h",
    groups={
        "query_key_value": "attn.c_attn",
        "attention_output": "attn.c_proj",
        "ffn_in": "mlp.c_fc",
        "ffn_out": "mlp.c_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "attn", "self_attention": "attn"},
    fan_in_fan_out=True,
))
