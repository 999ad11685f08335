"""What a sampler knows of a space: the choices of each dimension, the exact cost, the budgets, the reference."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from optuna.distributions import IntDistribution

CostFn = Callable[[np.ndarray], np.ndarray]


def point_key(point) -> bytes:
    """A point's choice indices as a hashable key."""
    return np.asarray(point, dtype=np.int64).tobytes()


@dataclass
class MemoryLimit:
    """The ceiling on a plan's estimated peak training memory, in GiB.

    ``budget_gb`` is the job's; ``failed_gb`` the smallest estimate of a plan that ran out of
    memory all the same: every plan estimated at that much or more is then out of bounds too.
    """

    budget_gb: float | None = None
    failed_gb: float | None = None

    def ran_out(self, estimate_gb: float) -> None:
        self.failed_gb = estimate_gb if self.failed_gb is None else min(self.failed_gb, estimate_gb)

    def allows(self, estimates: np.ndarray) -> np.ndarray:
        ok = np.ones(len(estimates), dtype=bool)
        if self.budget_gb is not None:
            ok &= estimates <= self.budget_gb
        if self.failed_gb is not None:
            ok &= estimates < self.failed_gb
        return ok

    def reason(self, estimate_gb: float) -> str | None:
        if self.budget_gb is not None and estimate_gb > self.budget_gb:
            return f"an estimated {estimate_gb:.2f} GiB of training memory exceeds the budget of {self.budget_gb:g} GiB"
        if self.failed_gb is not None and estimate_gb >= self.failed_gb:
            return (f"an estimated {estimate_gb:.2f} GiB of training memory reaches the {self.failed_gb:.2f} GiB "
                    "of a plan that ran out of memory")
        return None


@dataclass(frozen=True)
class Domain:
    """A grid of ordinal dimensions with an exact cost.

    ``cost`` maps an ``(n, d)`` array of choice indices to ``n`` costs, NaN where a point cannot be
    trained (an empty plan). ``max_cost`` is the hard budget. ``reference`` is the hypervolume
    reference point (quality floor, cost ceiling). ``memory`` maps points to their estimated peak
    training memory in GiB, bounded by ``memory_limit``. ``method_costs``, in a space of several
    methods, maps points to an ``(n, k)`` array: each method's share of the trainable parameters.
    ``rungs``, in a search with rungs, the fractions of the training at which a trial is scored.
    ``plan_key`` maps points to one key per plan: points that differ only in choices the plan does
    not use (the rank of a layer it leaves out) share one. By default each point is its own plan.
    ``baselines``: the job's named baselines that are points of the space, by name.
    """

    names: tuple[str, ...]
    levels: tuple[int, ...]
    cost: CostFn
    max_cost: float | None = None
    reference: tuple[float, float] | None = None
    memory: CostFn | None = None
    memory_limit: MemoryLimit = field(default_factory=MemoryLimit)
    method_costs: CostFn | None = None
    rungs: tuple[float, ...] = ()
    plan_key: Callable[[np.ndarray], list] | None = None
    baselines: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def plan_keys(self, points: np.ndarray) -> list:
        """One key per point, equal for points that decode to the same plan."""
        points = np.asarray(points, dtype=np.int64)
        return self.plan_key(points) if self.plan_key is not None else [point_key(row) for row in points]

    @functools.cached_property
    def baseline_plans(self) -> frozenset:
        """The plan keys of the named baselines' points: plans trained beside the search, never as trials."""
        return frozenset(self.plan_keys(np.asarray(list(self.baselines.values()), dtype=np.int64)) if self.baselines else ())

    def distributions(self) -> dict[str, IntDistribution]:
        """Optuna's distributions of the dimensions: every dimension is a choice index."""
        return {n: IntDistribution(0, k - 1) for n, k in zip(self.names, self.levels, strict=True)}

    @property
    def bounds_memory(self) -> bool:
        limit = self.memory_limit
        return self.memory is not None and (limit.budget_gb is not None or limit.failed_gb is not None)

    def feasible(self, points: np.ndarray, costs: np.ndarray | None = None) -> np.ndarray:
        """Which points may be trained (``costs``: their costs, when already computed)."""
        costs = self.cost(points) if costs is None else costs
        ok = np.isfinite(costs)
        if self.max_cost is not None:
            ok &= costs <= self.max_cost
        if self.bounds_memory and len(points):
            ok &= self.memory_limit.allows(self.memory(points))
        return ok

    def infeasible_reason(self, point: np.ndarray) -> str | None:
        """Why a point (one row) is never trained, or None when it is trained."""
        cost = float(self.cost(point)[0])
        if not math.isfinite(cost):
            return "the plan turns every adapter off"
        if self.max_cost is not None and cost > self.max_cost:
            return f"{int(cost)} trainable parameters exceed the budget of {int(self.max_cost)}"
        if self.bounds_memory:
            return self.memory_limit.reason(float(self.memory(point)[0]))
        return None

    def point(self, params: dict) -> np.ndarray:
        """A trial's parameters as one row of choice indices."""
        return np.array([[int(params[n]) for n in self.names]])

    def not_baselines(self, points: list[dict]) -> list[dict]:
        """The ``points`` (parameters by name) whose plans no named baseline trains."""
        return [p for p in points if self.plan_keys(self.point(p))[0] not in self.baseline_plans]


def space_domain(space, max_params: int | None, reference=None, memory_gb: Callable | None = None,
                 memory_limit: MemoryLimit | None = None, rungs: tuple[float, ...] = (),
                 baselines: dict[str, dict[str, int]] | None = None) -> Domain:
    """The Domain of a ``SearchSpace``: cost is the exact trainable count of the decoded Plan, split
    by method where the space has several; ``memory_gb(plan)``, when given, its estimated peak
    training memory; ``rungs``, those of a search with rungs; ``baselines``, the points of the named
    baselines the space holds (``SearchSpace.point_of``)."""
    from autopeft.workers.methods import method

    names = tuple(d.name for d in space.dimensions)
    methods = space.methods

    @functools.lru_cache(maxsize=4096)  # a point's cost and plan key are asked for together: decode it once
    def decoded(key: bytes):
        return space.decode(dict(zip(names, np.frombuffer(key, dtype=np.int64).tolist(), strict=True)))

    def plan_of(row: np.ndarray):
        return decoded(point_key(row))

    def per_plan(value: Callable, width: int = 1) -> Callable[[np.ndarray], np.ndarray]:
        cache: dict[bytes, list[float]] = {}

        def of(points: np.ndarray) -> np.ndarray:
            out = np.empty((len(points), width))
            for i, row in enumerate(np.asarray(points, dtype=np.int64)):
                key = point_key(row)
                if key not in cache:
                    plan = plan_of(row)
                    cache[key] = [math.nan] * width if plan.is_empty else value(plan)
                out[i] = cache[key]
            return out

        return of

    def counts(plan) -> list[float]:
        return [float(space.count(plan)),
                *(float(method(m).count(plan[m], space.shape)) if m in plan.methods else 0.0 for m in methods)]

    counted = per_plan(counts, 1 + len(methods))

    def plan_key(points: np.ndarray) -> list:
        return [plan_of(row) for row in np.asarray(points, dtype=np.int64)]  # a Plan is its own key: equal plans hash alike

    estimated = None if memory_gb is None else per_plan(lambda plan: [float(memory_gb(plan))])
    ref = None if reference is None else (reference.quality, float(reference.params))
    return Domain(names, tuple(len(d.choices) for d in space.dimensions), lambda points: counted(points)[:, 0], max_params, ref,
                  memory=None if estimated is None else lambda points: estimated(points)[:, 0],
                  memory_limit=memory_limit or MemoryLimit(),
                  method_costs=(lambda points: counted(points)[:, 1:]) if len(methods) > 1 else None, rungs=tuple(rungs),
                  plan_key=plan_key,
                  baselines={name: tuple(point[n] for n in names) for name, point in (baselines or {}).items()})

