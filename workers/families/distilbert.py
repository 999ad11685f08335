"""DistilBERT: BERT's linear layers under other names, and no BERT-style output blocks."""

from .base import Family, register_family

DISTILBERT = register_family(Family(
    name="distilbert",
    decoder=False,
    model_types=("distilbert",),
    layers_path="transformer.layer",
    groups={
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_output": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
))
