"""Llama and the decoders built like it: Mistral, Qwen2, Qwen3, Gemma, Gemma 2 (SmolLM2, TinyLlama).

Separate q/k/v/o projections (k and v narrower under grouped-query attention) and a gated MLP:
gate_proj is ``ffn_gate``, up_proj ``ffn_in``, down_proj ``ffn_out``.
"""

from .base import Family, register_family

LLAMA = register_family(Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"),
    layers_path="model.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_in": "mlp.up_proj",
        "ffn_out": "mlp.down_proj",
    },
    blocks={"ffn_output": "mlp", "attention_output": "self_attn", "self_attention": "self_attn"},
))
