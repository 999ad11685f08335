"""Samplers that propose points: one small factory behind Optuna's ``BaseSampler`` interface."""

from __future__ import annotations

import optuna

from autopeft.sampler import AutoPeftSampler, Domain

SAMPLERS = ("autopeft", "gp", "random", "nsga2", "tpe")


def make_sampler(name: str, seed: int, n_startup_trials: int = 10, domain: Domain | None = None) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``: ``autopeft`` (default), ``gp``, ``random``, ``nsga2`` or ``tpe``.

    ``autopeft`` needs the space's ``domain`` (exact cost and budget). Every sampler sees the
    study's running trials: ``autopeft`` and ``gp`` condition on them, TPE uses the constant
    liar, NSGA-II and random ignore them.
    """
    if name == "autopeft":
        if domain is None:
            raise ValueError("the autopeft sampler needs the space's domain")
        return AutoPeftSampler(domain, seed=seed, n_startup_trials=n_startup_trials)
    if name == "gp":
        return optuna.samplers.GPSampler(
            seed=seed,
            n_startup_trials=n_startup_trials,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup_trials))
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=True
        )
    raise ValueError(f"unknown sampler '{name}'")
