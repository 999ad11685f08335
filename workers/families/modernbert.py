"""ModernBERT: a pre-norm encoder with fused projections, Wqkv (``query_key_value``) and a gated Wi
(``ffn_gate_in``).

Its attention and MLP are whole modules, as a decoder's are, so serial and parallel adapters wrap
them; its attention keeps no key/value cache, so prefixes do not fit. Its classifier's ``head``
(dense, activation, norm on the pooled output) is its pooler: frozen unless a plan trains it. Its
first layer's attention norm is an identity, so LN tuning, which takes the norms every layer has,
tunes the MLP's norm (``mlp_norm``) alone.
"""

from .base import Family, register_family

MODERNBERT = register_family(Family(
    name="modernbert",
    decoder=False,
    model_types=("modernbert",),
    layers_path="model.layers",
    groups={
        "query_key_value": "attn.Wqkv",
        "attention_output": "attn.Wo",
        "ffn_gate_in": "mlp.Wi",
        "ffn_out": "mlp.Wo",
    },
    blocks={"ffn_output": "mlp", "attention_output": "attn"},
    pooler="head",
))
