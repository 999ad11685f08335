"""GPT-NeoX (Pythia): one fused query_key_value projection, and an ungated MLP (dense_h_to_4h,
dense_4h_to_h). Attention and MLP run side by side on the same input (parallel residual)."""

from .base import Family, register_family

GPT_NEOX = register_family(Family(
    name="gpt_neox",
    model_types=("gpt_neox",),
    layers_path="gpt_neox.layers",
    groups={
        "query_key_value": "attention.query_key_value",
        "attention_output": "attention.dense",
        "ffn_in": "mlp.dense_h_to_4h",
        "ffn_out": "mlp.dense_4h_to_h",
    },
    blocks={"ffn_output": "mlp", "attention_output": "attention", "self_attention": "attention"},
))
