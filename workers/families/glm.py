"""GLM and GLM-4: Llama's attention (q/k/v/o, grouped-query) with Phi-3's MLP, its gate and input fused in
gate_up_proj (``ffn_gate_in``)."""

from .base import Family, register_family

GLM = register_family(Family(
    name="glm",
    model_types=("glm", "glm4"),
    layers_path="model.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.o_proj",
        "ffn_gate_in": "mlp.gate_up_proj",
        "ffn_out": "mlp.down_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
