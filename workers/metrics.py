"""Quality metrics for classification."""

from __future__ import annotations

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
