"""OPT: q/k/v projections and ``out_proj`` in ``self_attn``; its FFN (fc1, fc2) sits in the layer
itself, not in a module of its own, so no adapter can wrap it: serial and parallel adapters do not
fit, the prefix and every method on linear layers do."""

from .base import Family, register_family

OPT = register_family(Family(
    name="opt",
    model_types=("opt",),
    layers_path="model.decoder.layers",
    groups={
        "query": "self_attn.q_proj",
        "key": "self_attn.k_proj",
        "value": "self_attn.v_proj",
        "attention_output": "self_attn.out_proj",
        "ffn_in": "fc1",
        "ffn_out": "fc2",
    },
    blocks={"attention_output": "self_attn", "self_attention": "self_attn"},
))
