"""The GP of the quality objective(s), over choice indices and the log of the exact cost."""

from __future__ import annotations

import math

import numpy as np
import optuna
import torch

STATE_KEY = "autopeft:gp"  # trial system attribute: the hyperparameters of the fit made for that trial


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


def last_state(study: optuna.Study) -> dict | None:
    """The hyperparameters the latest fit of this study stored on its trial."""
    for t in reversed(study.get_trials(deepcopy=False)):
        if STATE_KEY in t.system_attrs:
            return t.system_attrs[STATE_KEY]
    return None


def fit_quality_gp(x: torch.Tensor, y: torch.Tensor, start: dict | None):
    """A GP of the quality objective(s), fitted from ``start`` hyperparameters when they fit its shape."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.mlls import ExactMarginalLogLikelihood

    d = x.shape[-1] - 1  # the last column (linear cost) is not a GP input
    covar = get_covar_module_with_dim_scaled_prior(ard_num_dims=d, active_dims=list(range(d)))
    model = SingleTaskGP(x, y, covar_module=covar, outcome_transform=Standardize(m=y.shape[-1]))
    own = dict(model.named_parameters())
    warm = bool(start) and all(name in start and torch.Size(torch.as_tensor(start[name]).shape) == p.shape
                               for name, p in own.items())
    if warm:
        with torch.no_grad():
            for name, value in start.items():
                value = torch.as_tensor(value, dtype=torch.float64)
                if name in own:
                    own[name].copy_(value)
    try:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                         optimizer_kwargs={"options": {"maxiter": 25 if warm else 100}})
    except Exception:  # a failed fit keeps the starting hyperparameters, still a usable model
        pass
    return model, {name: p.detach().tolist() for name, p in model.named_parameters()}
