"""Maximising an acquisition over the grid itself: a hill climb over one-change neighbours."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def neighbours(point: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Every point that differs from ``point`` in exactly one dimension."""
    dims = np.repeat(np.arange(len(levels)), levels)
    values = np.concatenate([np.arange(k) for k in levels])
    keep = values != point[dims]
    rows = np.repeat(np.asarray(point, dtype=np.int64)[None], int(keep.sum()), axis=0)
    rows[np.arange(len(rows)), dims[keep]] = values[keep]
    return rows


def hill_climb(score: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, start_scores: np.ndarray,
               levels: np.ndarray, max_steps: int) -> None:
    """Move each start to its best neighbour while that improves; all neighbours scored in one batch per step.

    ``score`` remembers every point it scored: the caller picks the best of them.
    """
    current, current_scores = starts.copy(), start_scores.copy()
    for _ in range(max_steps):
        rows = [neighbours(point, levels) for point in current]
        values = np.split(score(np.concatenate(rows)), np.cumsum([len(n) for n in rows])[:-1])
        moved = False
        for i, (candidates, vals) in enumerate(zip(rows, values, strict=True)):
            best = int(np.argmax(vals))
            if vals[best] > current_scores[i]:
                current[i], current_scores[i], moved = candidates[best], vals[best], True
        if not moved:
            break
