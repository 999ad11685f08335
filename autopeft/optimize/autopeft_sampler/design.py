"""Quasi-random points of the grid that cover the cost axis, from tiny plans to large ones."""

from __future__ import annotations

import numpy as np
import torch


def sobol(d: int, n: int, seed: int) -> np.ndarray:
    return torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n).double().numpy()


def density_points(u: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Grid points from uniforms; the first column sets how much of the model a point adapts.

    Each point draws its own skew (from mostly small sizes and few layers to mostly large and
    many), so a quasi-random design covers the cost axis from tiny to large, not only the middle.
    """
    skew = 2.0 ** (5.0 * u[:, :1] - 2.0)  # between 1/4 and 8
    v = u[:, 1:] ** skew
    return np.minimum((v * levels).astype(int), levels - 1)
