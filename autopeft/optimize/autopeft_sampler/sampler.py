"""autopeft's sampler: qLogNEHVI over the discrete PEFT space, with the trainable-parameter count exact.

The space is a grid of ordinal dimensions (module sizes, ranks, layer bits). A GP models only
the quality objective(s); the cost (trainable parameters) of any point is computed exactly by the
domain, so it enters the hypervolume as a deterministic objective and the hard budget is applied
before a point is ever scored. The acquisition function is optimised over the grid itself: a
hill climb over one-change neighbours, started from the observed Pareto points and from the best
of a budget-aware random sample. Running trials are pending points of the acquisition function.
Proposals made before a new result arrives (the trials that start together after a burst of
results) share one fit of the GP and differ only in their pending points.
The job's finished named baselines that are points of the space are observations too, and their
plans are never proposed.

Every proposal is a function of the study's trials and baselines, the seed and the trial number only, so a
search resumed from storage proposes what the interrupted one would have.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from autopeft.optimize.autopeft_sampler.acquisition import exact_cost_nehvi
from autopeft.optimize.autopeft_sampler.design import grid_points, sobol
from autopeft.optimize.autopeft_sampler.discrete import hill_climb
from autopeft.optimize.autopeft_sampler.model import Features, data_key, fit_quality_gp
from autopeft.optimize.domain import Domain, point_key
from autopeft.record.study import (
    BASELINES,
    RUNG_QUALITY,
    after_rung,
    ranked_where_it_waits,
    tells_plans_apart,
)


class AutoPeftSampler(optuna.samplers.BaseSampler):
    """Multi-objective Bayesian optimisation for a study whose objectives are quality(s) and cost.

    ``cost_index`` is the position of the cost among the study's objectives (minimised); every
    other objective is a quality, modelled by the GP. The domain's reference point is the
    hypervolume's.
    """

    def __init__(self, domain: Domain, seed: int = 0, n_startup_trials: int = 10, cost_index: int = -1,
                 mc_samples: int = 32, random_candidates: int = 256, climbers: int = 3, max_steps: int = 6):
        self.domain = domain
        self.seed = seed
        self.n_startup_trials = n_startup_trials
        self.cost_index = cost_index
        self.mc_samples = mc_samples
        self.random_candidates = random_candidates
        self.climbers = climbers
        self.max_steps = max_steps
        self._levels = np.asarray(domain.levels)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._design = grid_points(sobol(len(domain.levels), 2048, seed), self._levels)
        self._last_fit: tuple[bytes, object] | None = None  # (the data's key, the GP fitted to it)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict:
        return self.domain.distributions()

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        point = self.propose(study, trial.number)
        return {name: int(v) for name, v in zip(self.domain.names, point, strict=True) if name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # -- proposing -------------------------------------------------------------------------------

    def propose(self, study: optuna.Study, number: int) -> np.ndarray:
        """The next point (choice indices) for trial ``number``.

        The GP is fitted afresh from the same starting hyperparameters each time, so a resumed
        search proposes exactly what the interrupted one would have.
        """
        rng = np.random.default_rng([self.seed, number])
        seen, x_obs, y_obs, costs, fractions, pending = self._history(study)
        if len({point_key(p) for p in x_obs}) < self.n_startup_trials:
            point = self._first_new(self._design, seen)
            return point if point is not None else self._random_point(rng, seen)
        x_obs, y_obs, costs, fractions = self._with_baselines(study, x_obs, y_obs, costs, fractions)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 100_003 + number)
            return self._optimise(rng, seen, x_obs, y_obs, costs, fractions, pending)

    def _history(self, study):
        """The points tried, the observations (point, qualities, cost, fraction of the training), the pending points.

        In a search with rungs every finished rung of a trial is an observation at its fraction of
        the training, except the rungs at which every trial scored the same (early in training all
        plans may predict the majority label): those say nothing about the plans. A trial waiting
        at a rung (the search sends on every one that qualifies before it asks for a new plan) or
        stopped at one is also taken to end there: its last rung's quality is also an observation
        of a full training. The search trains it no further, so the model must not go on
        expecting more of plans like it, proposing them again and again to be stopped early. A trial
        waiting at a rung below its bracket goes on unranked: it is pending.
        """
        signs, cost_index = self._signs(study)
        qualities = [s for i, s in enumerate(signs) if i != cost_index]
        rungs = self.domain.rungs if len(qualities) == 1 else ()
        seen: set = set()  # the plans tried or running
        x_obs, y_obs, fractions, pending = [], [], [], []
        at_rung: list[list[tuple[tuple, float, bool]]] = [[] for _ in rungs[:-1]]  # (point, quality, the trial ends there)
        for t in study.get_trials(deepcopy=False):
            point = self._indices(t.params)
            if point is None:
                continue
            seen.add(self.domain.plan_keys([point])[0])
            listed = t.user_attrs.get(RUNG_QUALITY, [])[: len(at_rung)] if rungs else []
            ends = t.state == TrialState.PRUNED or (t.state == TrialState.RUNNING and after_rung(t.user_attrs)
                                                    and ranked_where_it_waits(t.user_attrs))
            for rung, quality in enumerate(listed):
                if quality is not None and math.isfinite(quality):
                    at_rung[rung].append((point, qualities[0] * quality, ends and rung == len(listed) - 1))
            if ends:
                continue  # waiting after a rung, or stopped at one: never proposed again
            elif t.state == TrialState.RUNNING:  # proposed again, being in ``seen``
                pending.append(point)
            elif t.state == TrialState.COMPLETE and t.values is not None and all(map(math.isfinite, t.values)):
                x_obs.append(point)
                y_obs.append([s * v for i, (s, v) in enumerate(zip(signs, t.values, strict=True)) if i != cost_index])
                fractions.append(1.0)
        for rung, observed in enumerate(at_rung):
            if tells_plans_apart(q for _, q, _ in observed):
                ending = [(p, q) for p, q, last in observed if last]
                both = [(p, q) for p, q, _ in observed] + ending
                x_obs.extend(p for p, _ in both)
                y_obs.extend([q] for _, q in both)
                fractions.extend([rungs[rung]] * len(observed) + [1.0] * len(ending))
        seen.update(self.domain.baseline_plans)  # trained beside the search already
        x_obs = np.asarray(x_obs, dtype=np.int64).reshape(len(x_obs), len(self._levels))
        y_obs = np.asarray(y_obs, dtype=float).reshape(len(x_obs), len(qualities))
        costs = self.domain.cost(x_obs)
        keep = self.domain.feasible(x_obs, costs)  # points that cannot be trained say nothing about quality
        return seen, x_obs[keep], y_obs[keep], costs[keep], np.asarray(fractions, dtype=float)[keep], pending

    def _signs(self, study) -> tuple[list[float], int]:
        """1 for each objective maximised, -1 for each minimised; the cost's index among them."""
        signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
        return signs, self.cost_index % len(signs)

    def _with_baselines(self, study, x_obs, y_obs, costs, fractions):
        """The observations and the job's finished baselines that are points of the space: trainings of the same
        data at the same fidelity as the trials. They are not trials, so the initial design does not count them."""
        recorded = study.user_attrs.get(BASELINES, {})
        scores = {name: recorded.get(name, {}).get("quality") for name in self.domain.baselines}
        found = [(point, float(scores[name])) for name, point in self.domain.baselines.items()
                 if isinstance(scores[name], int | float) and math.isfinite(scores[name])]
        if not found or y_obs.shape[1] != 1:
            return x_obs, y_obs, costs, fractions
        signs, cost_index = self._signs(study)
        sign = next(s for i, s in enumerate(signs) if i != cost_index)
        points = np.asarray([p for p, _ in found], dtype=np.int64)
        extra = self.domain.cost(points)
        keep = self.domain.feasible(points, extra)
        return (np.concatenate([x_obs, points[keep]]), np.concatenate([y_obs, sign * np.asarray([[q] for _, q in found])[keep]]),
                np.concatenate([costs, extra[keep]]), np.concatenate([fractions, np.ones(int(keep.sum()))]))

    def _indices(self, params: dict) -> tuple[int, ...] | None:
        try:
            point = tuple(int(params[n]) for n in self.domain.names)
        except (KeyError, TypeError, ValueError):
            return None
        if any(v < 0 or v >= k for v, k in zip(point, self.domain.levels, strict=True)):
            return None
        return point

    def _reference(self, n_quality: int) -> tuple[list[float], float]:
        if self.domain.reference is None:
            raise ValueError("the sampler needs a reference point: give Domain.reference")
        floor, ceiling = self.domain.reference
        floors = floor if isinstance(floor, list | tuple) else [floor] * n_quality
        return [float(f) for f in floors], float(ceiling)

    def _first_new(self, points: np.ndarray, seen: set) -> np.ndarray | None:
        costs = self.domain.cost(points)
        for point, ok in zip(points, self.domain.feasible(points, costs), strict=True):
            if ok and self.domain.plan_keys([point])[0] not in seen:
                return point
        return None

    def _random_point(self, rng: np.random.Generator, seen: set) -> np.ndarray:
        for _ in range(50):
            point = self._first_new(self._random(rng, 256), seen)
            if point is not None:
                return point
        raise RuntimeError("no untried point within the budget is left in the search space")

    def _random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return grid_points(rng.random((n, len(self._levels))), self._levels)

    def _fitted(self, x: torch.Tensor, y: torch.Tensor):
        """The quality GP of these observations: the last one fitted when its data were the same (a fit is a
        function of its data alone, so the proposal is what a new fit would give), else a new fit."""
        key = data_key(x, y)
        if self._last_fit is None or self._last_fit[0] != key:
            self._last_fit = (key, fit_quality_gp(x, y))
        return self._last_fit[1]

    def _optimise(self, rng, seen, x_obs, y_obs, costs, fractions, pending) -> np.ndarray:
        from botorch.utils.multi_objective.pareto import is_non_dominated

        floors, ceiling = self._reference(y_obs.shape[1])
        features = Features(self._levels, ceiling, self.domain.method_costs, self.domain.rungs if y_obs.shape[1] == 1 else ())
        model = self._fitted(features(x_obs, costs, fractions), torch.as_tensor(y_obs, dtype=torch.float64))
        # each point once, by its quality at the largest fraction of the training; the GP predicts a full training
        order = np.argsort(-fractions, kind="stable")
        once = order[np.unique([point_key(p) for p in x_obs[order]], return_index=True)[1]]
        once.sort()
        x_obs, y_obs, costs = x_obs[once], y_obs[once], costs[once]
        x_feat = features(x_obs, costs)
        y_all = torch.as_tensor(np.column_stack([y_obs, -costs]))
        pending_arr = np.asarray(pending) if pending else np.zeros((0, len(self._levels)), dtype=int)
        pending_arr = pending_arr[self.domain.feasible(pending_arr)]
        x_pending = features(pending_arr, self.domain.cost(pending_arr)) if len(pending_arr) else None
        acq = exact_cost_nehvi(model, x_feat, y_all, floors, x_pending, self.mc_samples, int(rng.integers(2**31)))
        scores: dict[bytes, float] = {}

        def score(points: np.ndarray) -> np.ndarray:
            """Acquisition values of feasible untried points; -inf for every other point."""
            keys = [point_key(p) for p in points]
            new = [i for i, k in enumerate(keys) if k not in scores]
            if new:
                batch = points[new]
                costs = self.domain.cost(batch)
                ok = self.domain.feasible(batch, costs)
                ok[ok] = [k not in seen for k in self.domain.plan_keys(batch[ok])]
                values = np.full(len(new), -np.inf)
                if ok.any():
                    feats = features(batch[ok], costs[ok])
                    with torch.no_grad():
                        values[ok] = torch.cat([acq(c.unsqueeze(-2)) for c in feats.split(512)]).numpy()
                for i, v in zip(new, values, strict=True):
                    scores[keys[i]] = float(v)
            return np.array([scores[k] for k in keys])

        randoms = self._random(rng, self.random_candidates)
        random_scores = score(randoms)
        front = x_obs[is_non_dominated(y_all).numpy()]
        front = front[np.argsort(self.domain.cost(front))]
        front = front[np.unique(np.linspace(0, len(front) - 1, min(len(front), self.climbers)).round().astype(int))]
        top = randoms[np.argsort(-random_scores)[: self.climbers]]
        hill_climb(score, np.concatenate([front, top]), np.concatenate([np.full(len(front), -np.inf), score(top)]),
                   self._levels, self.max_steps)
        if not scores or max(scores.values()) == -np.inf:
            return self._random_point(rng, seen)
        return np.frombuffer(max(scores, key=scores.get), dtype=np.int64).copy()
