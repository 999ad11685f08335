"""Nemotron, Arcee (AFM) and Apertus: Llama's attention (q/k/v/o, grouped-query) with an ungated MLP of
up_proj (``ffn_in``) and down_proj (``ffn_out``), its activation a squared ReLU or xIELU."""

from .base import Family, register_family

NEMOTRON = register_family(Family(
    name="nemotron",
    model_types=("nemotron", "arcee", "apertus"),
    layers_path="model.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.o_proj",
        "ffn_in": "mlp.up_proj",
        "ffn_out": "mlp.down_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
