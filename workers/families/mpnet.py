"""MPNet (all-mpnet-base-v2 and other sentence encoders): BERT's layout with its own attention names.

Its FFN output block is BERT's (dense, dropout, LayerNorm with the residual), so parallel adapters
fit; its attention has no separate output block and no BERT-style self-attention, so serial
adapters and prefixes do not.
"""

from .base import Family, register_family

MPNET = register_family(Family(
    name="mpnet",
    decoder=False,
    model_types=("mpnet",),
    layers_path="encoder.layer",
    groups={
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attention_output": "attention.attn.o",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    blocks={"ffn_output": "output"},
))
