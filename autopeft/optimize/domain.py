"""What a sampler knows of a space: the choices of each dimension, the exact cost, the budget, the reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from optuna.distributions import IntDistribution

CostFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Domain:
    """A grid of ordinal dimensions with an exact cost.

    ``cost`` maps an ``(n, d)`` array of choice indices to ``n`` costs, NaN where a point cannot be
    trained (an empty plan). ``max_cost`` is the hard budget. ``reference`` is the hypervolume
    reference point (quality floor, cost ceiling).
    """

    names: tuple[str, ...]
    levels: tuple[int, ...]
    cost: CostFn
    max_cost: float | None = None
    reference: tuple[float, float] | None = None

    def distributions(self) -> dict[str, IntDistribution]:
        """Optuna's distributions of the dimensions: every dimension is a choice index."""
        return {n: IntDistribution(0, k - 1) for n, k in zip(self.names, self.levels, strict=True)}

    def feasible(self, costs: np.ndarray) -> np.ndarray:
        ok = np.isfinite(costs)
        if self.max_cost is not None:
            ok &= costs <= self.max_cost
        return ok

    def infeasible_reason(self, cost: float) -> str | None:
        """Why a point of this cost is never trained, or None when it is trained."""
        if not math.isfinite(cost):
            return "the plan turns every adapter off"
        if self.max_cost is not None and cost > self.max_cost:
            return f"{int(cost)} trainable parameters exceed the budget of {int(self.max_cost)}"
        return None

    def point(self, params: dict) -> np.ndarray:
        """A trial's parameters as one row of choice indices."""
        return np.array([[int(params[n]) for n in self.names]])


def space_domain(space, max_params: int | None, reference=None) -> Domain:
    """The Domain of a ``SearchSpace``: cost is the exact trainable count of the decoded Plan."""
    names = tuple(d.name for d in space.dimensions)
    cache: dict[bytes, float] = {}

    def cost(points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points))
        for i, row in enumerate(np.asarray(points, dtype=np.int64)):
            key = row.tobytes()
            if key not in cache:
                plan = space.decode(dict(zip(names, row.tolist(), strict=True)))
                cache[key] = math.nan if plan.is_empty else float(space.count(plan))
            out[i] = cache[key]
        return out

    ref = None if reference is None else (reference.quality, float(reference.params))
    return Domain(names, tuple(len(d.choices) for d in space.dimensions), cost, max_params, ref)
