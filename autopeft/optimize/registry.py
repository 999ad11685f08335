"""Every sampler autopeft can run, by name: one small factory each, behind Optuna's ``BaseSampler``.

Every sampler sees the study's running trials: ``autopeft`` and ``gp`` condition on them, TPE uses
the constant liar, NSGA-II and random ignore them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from autopeft.optimize.domain import Domain


def _autopeft(seed: int, n_startup_trials: int, domain: Domain | None):
    from autopeft.optimize.autopeft_sampler.sampler import AutoPeftSampler

    if domain is None:
        raise ValueError("the autopeft sampler needs the space's domain")
    return AutoPeftSampler(domain, seed=seed, n_startup_trials=n_startup_trials)


def _gp(seed: int, n_startup_trials: int, domain: Domain | None):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials,
                                     independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                     warn_independent_sampling=False)


def _random(seed: int, n_startup_trials: int, domain: Domain | None):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _nsga2(seed: int, n_startup_trials: int, domain: Domain | None):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup_trials))


def _tpe(seed: int, n_startup_trials: int, domain: Domain | None):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=True)


SAMPLERS: dict[str, Callable[[int, int, Domain | None], optuna.samplers.BaseSampler]] = {
    "autopeft": _autopeft,  # the default: qLogNEHVI with the exact cost
    "gp": _gp,
    "random": _random,
    "nsga2": _nsga2,
    "tpe": _tpe,
}


def make_sampler(name: str, seed: int, n_startup_trials: int = 10, domain: Domain | None = None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``; ``autopeft`` needs the space's ``domain`` (exact cost, budget, reference)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed, n_startup_trials, domain)
