"""Quasi-random points of the grid: the initial design and the acquisition's random candidates."""

from __future__ import annotations

import numpy as np
import torch


def sobol(d: int, n: int, seed: int) -> np.ndarray:
    return torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n).double().numpy()


def grid_points(u: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Grid points from uniforms in [0, 1): every choice of a dimension equally likely.

    Uniform, not skewed towards small plans: on real PEFT trials a uniform design finds a better
    front in its first ten trials (``benchmarks/optimizer.py``); the model-based phase then reaches
    the small plans, whose exact cost it knows.
    """
    return np.minimum((u * levels).astype(int), levels - 1)
