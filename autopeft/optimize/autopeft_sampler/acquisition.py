"""qLogNEHVI over (quality..., -cost), with the cost read exactly from the candidate's last feature."""

from __future__ import annotations

import numpy as np
import torch


def front_layers(y: torch.Tensor, layers: int) -> np.ndarray:
    """Indices of the points in the first ``layers`` non-dominated layers (all objectives maximised).

    Only these can plausibly be on the front, so they are the acquisition's baseline.
    """
    from botorch.utils.multi_objective.pareto import is_non_dominated

    remaining, chosen = np.arange(len(y)), []
    for _ in range(layers):
        if not len(remaining):
            break
        mask = is_non_dominated(y[remaining], deduplicate=False).numpy()
        chosen.extend(remaining[mask].tolist())
        remaining = remaining[~mask]
    return np.sort(chosen)


def exact_cost_nehvi(model, x_feat: torch.Tensor, y_all: torch.Tensor, floors: list[float],
                     x_pending: torch.Tensor | None, mc_samples: int, seed: int):
    """qLogNoisyExpectedHypervolumeImprovement whose last objective is the (normalised) exact cost.

    ``y_all`` holds the observed qualities and -cost / ceiling; the reference point is the quality
    floors and a cost ceiling of -1. Running trials are ``x_pending``.
    """
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
    from botorch.sampling import SobolQMCNormalSampler

    def with_cost(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        cost = -X[..., -1:].expand(*samples.shape[:-1], 1)
        return torch.cat([samples, cost], dim=-1)

    return qLogNoisyExpectedHypervolumeImprovement(
        model=model,
        ref_point=[*floors, -1.0],
        X_baseline=x_feat[front_layers(y_all, 2)],
        sampler=SobolQMCNormalSampler(torch.Size([mc_samples]), seed=seed),
        objective=GenericMCMultiOutputObjective(with_cost),
        X_pending=x_pending,
        prune_baseline=True,
        cache_root=True,
    )
