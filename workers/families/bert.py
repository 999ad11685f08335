"""BERT and the encoders built like it: RoBERTa, XLM-RoBERTa, ELECTRA (MiniLM is a BERT)."""

from .base import Family, register_family

BERT = register_family(Family(
    name="bert",
    decoder=False,
    model_types=("bert", "roberta", "xlm-roberta", "electra"),
    layers_path="encoder.layer",
    groups={
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    blocks={"ffn_output": "output", "attention_output": "attention.output", "self_attention": "attention.self"},
))
