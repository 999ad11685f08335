"""Proposing the next point to train: the study's sampler, with the budgets enforced exactly.

A proposal over the parameter or memory budget, or one whose plan trains nothing, is never trained. It is told to
the study at the quality floor, so that a model-based sampler learns the region is worthless
instead of proposing it again, and the next one is asked. After five such proposals in a row,
one proposal comes from a random sampler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import optuna

from autopeft.optimize.domain import Domain, point_key

RANDOM_AFTER = 5  # skipped proposals in a row before a random one


@dataclass(frozen=True)
class Proposal:
    trial: optuna.trial.Trial
    cost: float


SkipHook = Callable[[optuna.trial.Trial, str], "float | None"]
PlanOf = Callable[[dict], Hashable]
TrainedAs = Callable[[dict, PlanOf], "optuna.trial.FrozenTrial | None"]


class Proposer:
    """Asks ``study`` for trainable points of ``domain``; ``on_skip(trial, reason)`` sees each skipped
    proposal and may return the cost to tell for it (default: its cost, 0 for an empty plan).

    ``trained_as(params, plan_of)`` names the finished trial whose parameters decode to the same plan
    (``plan_of`` maps parameters to their plan's key): such a proposal (any sampler may make one, a
    resumed one especially, and choices a plan does not use make many points one plan) is skipped
    and told that trial's values.
    ``batched()`` opens a block whose writes reach the study in one transaction (a proposal's parameters).
    """

    def __init__(self, study: optuna.Study, domain: Domain, seed: int, max_skips: int, on_skip: SkipHook | None = None,
                 trained_as: TrainedAs | None = None, batched: Callable = contextlib.nullcontext):
        if domain.reference is None:
            raise ValueError("proposing needs the domain's reference point (the quality floor)")
        self.study, self.domain, self.seed, self.max_skips = study, domain, seed, max_skips
        self.on_skip, self.trained_as, self.batched = on_skip, trained_as, batched
        self.skips = 0
        self._in_a_row = 0
        self._plans: dict[bytes, Hashable] = {}

    def next(self) -> Proposal:
        distributions = self.domain.distributions()
        floor = self.domain.reference[0]
        while True:
            trial = self._ask(distributions)
            point = self.domain.point(trial.params)
            cost = float(self.domain.cost(point)[0])
            reason = self.domain.infeasible_reason(point)
            earlier = self.trained_as(trial.params, self._plan_of) if self.trained_as is not None and reason is None else None
            if reason is None and earlier is None:
                self._in_a_row = 0
                return Proposal(trial, cost)
            if earlier is not None:
                reason = f"the plan was trained as trial {earlier.number}"
            told = self.on_skip(trial, reason) if self.on_skip is not None else None
            values = list(earlier.values) if earlier is not None else [floor, float(told if told is not None else np.nan_to_num(cost))]
            self.study.tell(trial, values)
            self.skips += 1
            self._in_a_row += 1
            if self.skips > self.max_skips:
                raise RuntimeError(f"{self.skips} proposed plans were over the budget or empty (the last: {reason}); "
                                   "raise the budget or use a space with smaller sizes")

    def _plan_of(self, params: dict) -> Hashable:
        point = self.domain.point(params)
        key = point_key(point)
        if key not in self._plans:
            self._plans[key] = self.domain.plan_keys(point)[0]
        return self._plans[key]

    def _ask(self, distributions: dict) -> optuna.trial.Trial:
        sampler = self.study.sampler
        if self._in_a_row >= RANDOM_AFTER:
            self.study.sampler = optuna.samplers.RandomSampler(seed=self.seed + self.skips)
        try:
            with self.batched():
                return self.study.ask(distributions)
        finally:
            self.study.sampler = sampler
