"""Phi-1, Phi-1.5 and Phi-2: separate q/k/v projections, ``dense`` as the attention's output, and
an ungated MLP (fc1, fc2) beside the attention on the same input (parallel residual)."""

from .base import Family, register_family

PHI = register_family(Family(
    name="phi",
    model_types=("phi",),
    layers_path="model.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.dense",
        "ffn_in": "mlp.fc1",
        "ffn_out": "mlp.fc2",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
