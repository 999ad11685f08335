"""The GP of the quality objective(s), over choice indices and the log of the exact cost."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from autopeft.optimize.domain import CostFn


def max_iterations(observed: int) -> int:
    """L-BFGS steps per fit: 200 up to 50 observed trials, then fewer (down to 50 from 200 trials).

    A fit converges in 70 to 700 steps; stopped at 50 steps it leaves the lengthscales of a few
    trials half-fitted. 200 steps raise the hypervolume at 20 trials on every real-trial
    benchmark (``benchmarks/optimizer.py``; 500 steps add nothing more) and keep an ask under
    2 s at 50 trials; beyond that each step costs more, and fewer steps keep the ask time level.
    """
    return max(50, min(200, 10_000 // max(observed, 1)))


class Features:
    """GP inputs: each dimension's choice index scaled to [0, 1], the log of each method's parameters
    (in a space of several methods), the log cost, in a search with rungs the fraction of the
    training a quality was measured at (log-scaled: the first rung 0, a full training 1); last,
    cost / ceiling.

    The GP sees log parameter counts (capacity explains much of the quality), not the linear cost
    column, which only the deterministic cost objective reads. A method's own count sums what
    dozens of size and layer dimensions say about it in one input, which the GP can weigh after a
    handful of trials: on the real-trial benchmarks of spaces of several methods it raises the
    hypervolume reached in 15 to 20 trials (``benchmarks/optimizer.py``).
    """

    def __init__(self, levels: np.ndarray, ceiling: float, method_costs: CostFn | None = None,
                 rungs: tuple[float, ...] = ()):
        self.scale = np.maximum(levels - 1, 1).astype(float)
        self.ceiling = ceiling
        self.method_costs = method_costs
        self.first_rung = min(rungs) if rungs else None

    def __call__(self, points: np.ndarray, costs: np.ndarray, fractions: np.ndarray | None = None) -> torch.Tensor:
        """The features of ``points``, their qualities measured after ``fractions`` of the training (all of it by default)."""
        grid = np.asarray(points, dtype=float) / self.scale
        log_scale = math.log1p(self.ceiling)
        per_method = [] if self.method_costs is None else [np.log1p(self.method_costs(points)) / log_scale]
        fidelity = []
        if self.first_rung is not None:
            fractions = np.ones(len(grid)) if fractions is None else np.asarray(fractions, dtype=float)
            fidelity = [1.0 + np.log(fractions) / math.log(1.0 / self.first_rung)]
        return torch.as_tensor(np.column_stack([grid, *per_method, np.log1p(costs) / log_scale, *fidelity,
                                                costs / self.ceiling]), dtype=torch.float64)


def _kernel(kind: str, d: int):
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.priors import LogNormalPrior

    if kind == "rbf":
        return get_covar_module_with_dim_scaled_prior(ard_num_dims=d, active_dims=list(range(d)))
    prior = LogNormalPrior(math.sqrt(2) + 0.5 * math.log(d), math.sqrt(3))
    return ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=d, active_dims=list(range(d)), lengthscale_prior=prior))


SELECTION_STEPS = 50


def data_key(x: torch.Tensor, y: torch.Tensor) -> bytes:
    """A digest of a GP's training data: equal for equal inputs and targets."""
    digest = hashlib.blake2b(digest_size=16)
    for t in (x, y):
        digest.update(repr(tuple(t.shape)).encode())
        digest.update(t.detach().contiguous().numpy().tobytes())
    return digest.digest()


def fit_quality_gp(x: torch.Tensor, y: torch.Tensor):
    """A GP of the quality objective(s), its kernel chosen by the data.

    Two GPs, each with one lengthscale per input and a lengthscale prior that grows with the
    number of inputs (Hvarfner et al. 2024, BoTorch's default): an RBF kernel, and a scaled
    Matérn 5/2. Both are fitted for ``SELECTION_STEPS`` L-BFGS steps; the one with the higher
    marginal likelihood (priors included) is kept and fitted on to ``max_iterations`` steps in all,
    so that the second kernel costs a quarter of a full fit. Real PEFT landscapes, with their
    plateaus and steps, mostly choose Matérn; smooth ones RBF. Measured in ``benchmarks/optimizer.py``.

    The fit is a function of ``x`` and ``y`` alone: the random restarts of a failed fit draw from a
    generator seeded by the data, so that a model fitted once stands for every later fit of the same data.
    """
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    d = x.shape[-1] - 1  # the last column (linear cost) is not a GP input
    steps = max_iterations(len(y))
    fitted = []
    with torch.random.fork_rng():
        torch.manual_seed(int.from_bytes(data_key(x, y)[:8], "little") >> 1)
        for kind in ("matern", "rbf"):
            model = SingleTaskGP(x, y, covar_module=_kernel(kind, d), outcome_transform=Standardize(m=y.shape[-1]))
            mll = ExactMarginalLogLikelihood(model.likelihood, model)
            fitted.append((_fit(mll, min(steps, SELECTION_STEPS)), mll))
        _, mll = max(fitted, key=lambda f: f[0])  # the first, Matérn, on a tie
        if steps > SELECTION_STEPS:
            _fit(mll, steps - SELECTION_STEPS)
    mll.model.eval()
    return mll.model


def _fit(mll, steps: int) -> float:
    """``steps`` more L-BFGS steps from the model's hyperparameters; the marginal likelihood reached."""
    from botorch.fit import fit_gpytorch_mll

    try:
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": steps}})
    except Exception:  # a failed fit keeps the hyperparameters it started from, still a usable model
        pass
    model = mll.model
    model.train()
    with torch.no_grad():
        return float(mll(model(*model.train_inputs), model.train_targets).sum())
