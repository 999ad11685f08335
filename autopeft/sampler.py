"""autopeft's sampler: qLogNEHVI over the discrete PEFT space, with the trainable-parameter count exact.

The space is a grid of ordinal dimensions (module sizes, ranks, layer bits). A GP models only
the quality objective(s); the cost (trainable parameters) of any point is computed exactly by the
space, so it enters the hypervolume as a deterministic objective and the hard budget is applied
before a point is ever scored. The acquisition function is optimised over the grid itself: a
hill climb over one-change neighbours, started from the observed Pareto points and from the best
of a budget-aware random sample. Running trials are pending points of the acquisition function.

Every proposal is a function of the study's trials, the seed and the trial number only, so a
search resumed from storage proposes what the interrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import torch
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

CostFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Domain:
    """What the sampler knows of a space: the choices of each dimension and the exact cost.

    ``cost`` maps an ``(n, d)`` array of choice indices to ``n`` costs, NaN where a point cannot be
    trained (an empty plan). ``max_cost`` is the hard budget. ``reference`` is (quality floor, cost
    ceiling), used when the study does not store its own reference point.
    """

    names: tuple[str, ...]
    levels: tuple[int, ...]
    cost: CostFn
    max_cost: float | None = None
    reference: tuple[float, float] | None = None

    def distributions(self) -> dict[str, IntDistribution]:
        return {n: IntDistribution(0, k - 1) for n, k in zip(self.names, self.levels, strict=True)}

    def feasible(self, costs: np.ndarray) -> np.ndarray:
        ok = np.isfinite(costs)
        if self.max_cost is not None:
            ok &= costs <= self.max_cost
        return ok


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


class AutoPeftSampler(optuna.samplers.BaseSampler):
    """Multi-objective Bayesian optimisation for a study whose objectives are quality(s) and cost.

    ``cost_index`` is the position of the cost among the study's objectives (minimised); every
    other objective is a quality, modelled by the GP.
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
        self._design = _density_points(_sobol(len(domain.levels) + 1, 2048, seed), self._levels)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict:
        return self.domain.distributions()

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        point = self.propose(study, trial.number, trial._trial_id)
        return {name: int(v) for name, v in zip(self.domain.names, point, strict=True) if name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    # -- proposing -------------------------------------------------------------------------------

    def propose(self, study: optuna.Study, number: int, trial_id: int | None = None) -> np.ndarray:
        """The next point (choice indices) for trial ``number``.

        The GP's fitted hyperparameters are stored on the trial (``trial_id``) and the next fit
        starts from them: cheaper, and a resumed search starts from the same state.
        """
        rng = np.random.default_rng([self.seed, number])
        seen, x_obs, y_obs, costs, pending = self._history(study)
        if len(x_obs) < self.n_startup_trials:
            point = self._first_new(self._design, seen)
            return point if point is not None else self._random_point(rng, seen)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 100_003 + number)
            return self._optimise(study, trial_id, rng, seen, x_obs, y_obs, costs, pending)

    def _history(self, study):
        directions = study.directions
        cost_index = self.cost_index % len(directions)
        signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in directions]
        seen: set[bytes] = set()
        x_obs, y_obs, pending = [], [], []
        for t in study.get_trials(deepcopy=False):
            point = self._indices(t.params)
            if point is None:
                continue
            seen.add(_key(point))
            if t.state == TrialState.RUNNING:
                pending.append(point)
            elif t.state == TrialState.COMPLETE and t.values is not None and all(map(math.isfinite, t.values)):
                x_obs.append(point)
                y_obs.append([s * v for i, (s, v) in enumerate(zip(signs, t.values, strict=True)) if i != cost_index])
        x_obs = np.asarray(x_obs, dtype=np.int64).reshape(len(x_obs), len(self._levels))
        costs = self.domain.cost(x_obs)
        keep = self.domain.feasible(costs)  # points that cannot be trained say nothing about quality
        return seen, x_obs[keep], np.asarray(y_obs)[keep], costs[keep], pending

    def _indices(self, params: dict) -> tuple[int, ...] | None:
        try:
            point = tuple(int(params[n]) for n in self.domain.names)
        except (KeyError, TypeError, ValueError):
            return None
        if any(v < 0 or v >= k for v, k in zip(point, self.domain.levels, strict=True)):
            return None
        return point

    def _reference(self, study: optuna.Study, n_quality: int) -> tuple[list[float], float]:
        stored = study.user_attrs.get("reference")
        if stored is not None:
            floor, ceiling = stored["quality"], float(stored["params"])
        elif self.domain.reference is not None:
            floor, ceiling = self.domain.reference
        else:
            raise ValueError("the sampler needs a reference point: store one in the study or give Domain.reference")
        floors = floor if isinstance(floor, list | tuple) else [floor] * n_quality
        return [float(f) for f in floors], ceiling

    def _first_new(self, points: np.ndarray, seen: set) -> np.ndarray | None:
        costs = self.domain.cost(points)
        for point, ok in zip(points, self.domain.feasible(costs), strict=True):
            if ok and _key(point) not in seen:
                return point
        return None

    def _random_point(self, rng: np.random.Generator, seen: set) -> np.ndarray:
        for _ in range(50):
            point = self._first_new(self._random(rng, 256), seen)
            if point is not None:
                return point
        raise RuntimeError("no untried point within the budget is left in the search space")

    def _random(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return _density_points(rng.random((n, len(self._levels) + 1)), self._levels)

    def _optimise(self, study, trial_id, rng, seen, x_obs, y_obs, costs, pending) -> np.ndarray:
        from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
        from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
        from botorch.sampling import SobolQMCNormalSampler
        from botorch.utils.multi_objective.pareto import is_non_dominated

        floors, ceiling = self._reference(study, y_obs.shape[1])
        features = _Features(self._levels, ceiling)
        x_feat = features(x_obs, costs)
        model, state = _fit_quality_gp(x_feat, torch.as_tensor(y_obs, dtype=torch.float64), _last_state(study))
        if trial_id is not None:
            study._storage.set_trial_system_attr(trial_id, _STATE_KEY, state)
        y_all = torch.as_tensor(np.column_stack([y_obs, -costs]))

        def with_cost(samples: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
            cost = -X[..., -1:].expand(*samples.shape[:-1], 1)
            return torch.cat([samples, cost], dim=-1)

        pending_arr = np.asarray(pending) if pending else np.zeros((0, len(self._levels)), dtype=int)
        pending_arr = pending_arr[self.domain.feasible(self.domain.cost(pending_arr))]
        acq = qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=[*floors, -1.0],
            X_baseline=x_feat[_front_layers(y_all, 2)],
            sampler=SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=int(rng.integers(2**31))),
            objective=GenericMCMultiOutputObjective(with_cost),
            X_pending=features(pending_arr, self.domain.cost(pending_arr)) if len(pending_arr) else None,
            prune_baseline=True,
            cache_root=True,
        )
        scores: dict[bytes, float] = {}

        def score(points: np.ndarray) -> np.ndarray:
            """Acquisition values of feasible untried points; -inf for every other point."""
            keys = [_key(p) for p in points]
            new = [i for i, k in enumerate(keys) if k not in scores]
            if new:
                batch = points[new]
                costs = self.domain.cost(batch)
                ok = self.domain.feasible(costs) & np.array([keys[i] not in seen for i in new])
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
        current = np.concatenate([front, top])
        current_scores = np.concatenate([np.full(len(front), -np.inf), score(top)])
        for _ in range(self.max_steps):
            neighbours = [_neighbours(point, self._levels) for point in current]
            values = np.split(score(np.concatenate(neighbours)), np.cumsum([len(n) for n in neighbours])[:-1])
            moved = False
            for i, (rows, vals) in enumerate(zip(neighbours, values, strict=True)):
                best = int(np.argmax(vals))
                if vals[best] > current_scores[i]:
                    current[i], current_scores[i], moved = rows[best], vals[best], True
            if not moved:
                break
        if not scores or max(scores.values()) == -np.inf:
            return self._random_point(rng, seen)
        return np.frombuffer(max(scores, key=scores.get), dtype=np.int64).copy()


class _Features:
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


_STATE_KEY = "autopeft:gp"


def _last_state(study: optuna.Study) -> dict | None:
    """The hyperparameters the latest fit of this study stored on its trial."""
    for t in reversed(study.get_trials(deepcopy=False)):
        if _STATE_KEY in t.system_attrs:
            return t.system_attrs[_STATE_KEY]
    return None


def _front_layers(y: torch.Tensor, layers: int) -> np.ndarray:
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


def _fit_quality_gp(x: torch.Tensor, y: torch.Tensor, start: dict | None):
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


def _key(point) -> bytes:
    return np.asarray(point, dtype=np.int64).tobytes()


def _neighbours(point: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Every point that differs from ``point`` in exactly one dimension."""
    dims = np.repeat(np.arange(len(levels)), levels)
    values = np.concatenate([np.arange(k) for k in levels])
    keep = values != point[dims]
    rows = np.repeat(np.asarray(point, dtype=np.int64)[None], int(keep.sum()), axis=0)
    rows[np.arange(len(rows)), dims[keep]] = values[keep]
    return rows


def _sobol(d: int, n: int, seed: int) -> np.ndarray:
    return torch.quasirandom.SobolEngine(d, scramble=True, seed=seed).draw(n).double().numpy()


def _density_points(u: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Grid points from uniforms; the first column sets how much of the model a point adapts.

    Each point draws its own skew (from mostly small sizes and few layers to mostly large and
    many), so a quasi-random design covers the cost axis from tiny to large, not only the middle.
    """
    skew = 2.0 ** (5.0 * u[:, :1] - 2.0)  # between 1/4 and 8
    v = u[:, 1:] ** skew
    return np.minimum((v * levels).astype(int), levels - 1)
