"""DeBERTa-v2 and DeBERTa-v3 (model type ``deberta-v2``): BERT's layout with ``*_proj`` attention names.

Its output blocks are BERT's (dense, dropout, LayerNorm with the residual), so serial and parallel
adapters fit; its disentangled self-attention keeps no key/value cache, so prefixes do not. The
classifier's ``pooler.dense`` is a pooler as BERT's is. That attention is its own code, not a fused
kernel, so it keeps its score rows on a GPU too, and with relative attention the content-to-position
and position-to-content rows besides (``ModelShape.relative_width``).
"""

from .base import Family, register_family

DEBERTA = register_family(Family(
    name="deberta",
    decoder=False,
    model_types=("deberta-v2",),
    layers_path="encoder.layer",
    groups={
        "query": "attention.self.query_proj",
        "key": "attention.self.key_proj",
        "value": "attention.self.value_proj",
        "attention_output": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    blocks={"ffn_output": "output", "attention_output": "attention.output"},
    fused_attention=False,
))
