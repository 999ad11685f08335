"""The GP of the quality objective(s), over choice indices and the log of the exact cost."""

from __future__ import annotations

import math

import numpy as np
import torch


class Features:
    """GP inputs: each dimension's choice index scaled to [0, 1], then log cost; last, cost / ceiling.

    The GP sees the log cost (capacity explains much of the quality), not the linear cost column,
    which only the deterministic cost objective reads.
    """

    def __init__(self, levels: np.ndarray, ceiling: float):
        self.scale = np.maximum(levels - 1, 1).astype(float)
        self.ceiling = ceiling

    def __call__(self, points: np.ndarray, costs: np.ndarray) -> torch.Tensor:
        grid = np.asarray(points, dtype=float) / self.scale
        log_cost = np.log1p(costs) / math.log1p(self.ceiling)
        return torch.as_tensor(np.column_stack([grid, log_cost, costs / self.ceiling]), dtype=torch.float64)


def fit_quality_gp(x: torch.Tensor, y: torch.Tensor):
    """A GP of the quality objective(s): a scaled Matérn 5/2 kernel with ARD lengthscales.

    The lengthscale prior grows with the number of inputs (Hvarfner et al. 2024, BoTorch's
    default), so many dimensions do not make every one look relevant. Matérn 5/2 rather than RBF:
    PEFT landscapes have plateaus and steps that a smoother kernel blurs, and it is what Optuna's
    GPSampler uses; measured in ``benchmarks/optimizer.py``.
    """
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import LogNormalPrior

    d = x.shape[-1] - 1  # the last column (linear cost) is not a GP input
    prior = LogNormalPrior(math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3))
    covar = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, active_dims=list(range(d)), lengthscale_prior=prior))
    model = SingleTaskGP(x, y, covar_module=covar, outcome_transform=Standardize(m=y.shape[-1]))
    try:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    except Exception:  # a failed fit keeps the starting hyperparameters, still a usable model
        pass
    return model
