"""Quality metrics: classification scores, and exact match of generated text."""

from __future__ import annotations

import string
from collections.abc import Sequence


def score(metric: str, labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Accuracy, macro F1 or Matthews correlation of ``predictions`` against ``labels``."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if metric == "accuracy":
        return float(accuracy_score(labels, predictions))
    if metric == "f1":
        return float(f1_score(labels, predictions, average="macro", zero_division=0))
    if metric == "mcc":
        return float(matthews_corrcoef(labels, predictions))
    raise ValueError(f"unknown metric '{metric}'")


def majority_score(metric: str, labels: Sequence[int]) -> float:
    """The score of always predicting the most common label: the floor any trained model must beat."""
    majority = max(set(labels), key=list(labels).count)
    return score(metric, labels, [majority] * len(labels))


def normalise(text: str) -> str:
    """Lower case, without surrounding whitespace and punctuation: ``" Fresh."`` is ``"fresh"``."""
    return text.strip().strip(string.punctuation + string.whitespace).lower()


def exact_match(references: Sequence[str], generations: Sequence[str]) -> float:
    """The share of generations equal to their reference once both are normalised."""
    pairs = list(zip(references, generations, strict=True))
    return sum(normalise(r) == normalise(g) for r, g in pairs) / max(1, len(pairs))
