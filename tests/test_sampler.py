"""The contract of autopeft's sampler, through real Optuna studies (in memory and SQLite)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
import pytest

from autopeft.optimize.autopeft_sampler.model import Features
from autopeft.optimize.autopeft_sampler.sampler import AutoPeftSampler
from autopeft.optimize.domain import Domain, space_domain
from autopeft.record.pareto import Reference
from autopeft.record.study import BASELINES, BRACKET, DIRECTIONS, RUNG, RUNG_QUALITY
from autopeft.space.search_space import load_space
from autopeft.workers.models import model_shape

SIZES = np.array([0, 1, 2, 4])
LAYERS = 5


def _cost(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points)
    total = (SIZES[points[:, 0]] * points[:, 1:].sum(-1) * 3 + SIZES[points[:, 0]]).astype(float)
    total[total == 0] = math.nan
    return total


def _quality(point: np.ndarray) -> float:
    # rises with capacity, with a preference for the later layers
    return 0.5 + 0.3 * (1 - math.exp(-_cost(point[None])[0] / 20)) + 0.02 * float(point[1:] @ np.arange(LAYERS)) / LAYERS


BUDGET = 40.0
DOMAIN = Domain(("size", *[f"layer.{i}" for i in range(LAYERS)]), (4,) + (2,) * LAYERS, _cost, BUDGET, (0.5, BUDGET + 1))


def _study(sampler, storage=None, name=None):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(directions=DIRECTIONS, sampler=sampler, storage=storage, study_name=name, load_if_exists=True)


def _point(trial) -> np.ndarray:
    return np.array([trial.params[n] for n in DOMAIN.names])


def _run(study, trials: int, parallel: int = 1) -> list[np.ndarray]:
    proposed, running = [], []
    while len(proposed) < trials:
        while len(running) < parallel and len(proposed) < trials:
            trial = study.ask(DOMAIN.distributions())
            proposed.append(_point(trial))
            running.append(trial)
        trial = running.pop(0)
        point = _point(trial)
        study.tell(trial, [_quality(point), float(_cost(point[None])[0])])
    for trial in running:
        study.tell(trial, [_quality(_point(trial)), float(_cost(_point(trial)[None])[0])])
    return proposed


def test_never_over_budget_never_empty_and_never_a_point_twice():
    study = _study(AutoPeftSampler(DOMAIN, seed=0, n_startup_trials=5))
    proposed = _run(study, 24, parallel=2)
    costs = _cost(np.array(proposed))
    assert np.isfinite(costs).all() and (costs <= BUDGET).all()
    assert len({tuple(p) for p in proposed}) == len(proposed)
    # the model-based phase found the front's corner: the largest plan within the budget scores best
    best = max(study.best_trials, key=lambda t: t.values[0])
    assert best.values[1] >= 0.75 * BUDGET


def test_initial_design_spreads_over_the_cost_axis():
    study = _study(AutoPeftSampler(DOMAIN, seed=3, n_startup_trials=10))
    costs = _cost(np.array(_run(study, 10)))
    assert costs.min() <= 0.2 * BUDGET and costs.max() >= 0.6 * BUDGET


def test_running_trials_are_pending_and_never_proposed_again():
    sampler = AutoPeftSampler(DOMAIN, seed=1, n_startup_trials=4)
    study = _study(sampler)
    _run(study, 6)
    running = [study.ask(DOMAIN.distributions()) for _ in range(4)]
    points = {tuple(_point(t)) for t in running}
    assert len(points) == 4  # four workers get four different proposals
    finished = {tuple(_point(t)) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert not points & finished


def test_survives_failed_pruned_and_foreign_trials():
    sampler = AutoPeftSampler(DOMAIN, seed=2, n_startup_trials=3)
    study = _study(sampler)
    _run(study, 5)
    failed = study.ask(DOMAIN.distributions())
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    nan = study.ask(DOMAIN.distributions())
    study.tell(nan, [float("nan"), 10.0])  # Optuna records a NaN value as a failed trial
    pruned = study.ask(DOMAIN.distributions())
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    # a trial from another sampler with only part of the dimensions, and one over the budget
    study.add_trial(optuna.trial.create_trial(params={"size": 1}, distributions={"size": DOMAIN.distributions()["size"]},
                                              values=[0.9, 1.0]))
    over = dict(zip(DOMAIN.names, [3, 1, 1, 1, 1, 1], strict=True))
    study.add_trial(optuna.trial.create_trial(params=over, distributions=DOMAIN.distributions(), values=[0.99, 63.0]))
    before = {tuple(_point(t)) for t in (failed, nan, pruned)}
    proposed = _run(study, 6)
    assert not {tuple(p) for p in proposed} & before  # a failed point is not tried again
    assert (_cost(np.array(proposed)) <= BUDGET).all()


def test_resumed_study_proposes_what_the_interrupted_one_would(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = _study(AutoPeftSampler(DOMAIN, seed=5, n_startup_trials=4), storage, "resume")
    _run(first, 9)
    number = len(first.trials)
    again = _study(AutoPeftSampler(DOMAIN, seed=5, n_startup_trials=4), storage, "resume")
    expected = first.sampler.propose(first, number)
    np.testing.assert_array_equal(again.sampler.propose(again, number), expected)


def test_proposals_made_together_share_one_fit_and_are_what_a_fresh_fit_proposes(monkeypatch):
    from autopeft.optimize.autopeft_sampler import sampler as sampler_module

    fits = []
    fit = sampler_module.fit_quality_gp
    monkeypatch.setattr(sampler_module, "fit_quality_gp", lambda x, y: fits.append(len(y)) or fit(x, y))
    study = _study(AutoPeftSampler(DOMAIN, seed=4, n_startup_trials=4))
    _run(study, 6)
    together, fresh = [], []
    for _ in range(3):  # three workers free at once: no result comes in between the proposals
        number = len(study.trials)
        fresh.append(tuple(AutoPeftSampler(DOMAIN, seed=4, n_startup_trials=4).propose(study, number)))
        together.append(tuple(_point(study.ask(DOMAIN.distributions()))))
    assert together == fresh  # as a resumed search, fitting afresh, would propose them
    assert len(set(together)) == 3
    assert fits.count(6) == 4  # three fresh samplers' fits, and one for the three proposals made together
    study.tell(study.trials[-1].number, [0.7, float(_cost(np.array([together[-1]]))[0])])
    study.ask(DOMAIN.distributions())
    assert fits[-1] == 7  # a new result: a new fit


def test_real_space_cost_is_the_exact_trainable_count_and_respects_the_budget(tiny_bert):
    space = load_space("mixed", model_shape(tiny_bert, num_labels=2))
    budget = space.count(space.largest_plan()) // 4
    domain = space_domain(space, budget, Reference(0.5, budget + 1))
    study = _study(AutoPeftSampler(domain, seed=0, n_startup_trials=4))
    for _ in range(8):
        trial = study.ask(domain.distributions())
        plan = space.decode(trial.params)
        params = space.count(plan)
        assert not plan.is_empty and params <= budget
        assert domain.cost(np.array([[trial.params[n] for n in domain.names]]))[0] == params
        study.tell(trial, [0.5 + 0.1 * math.log1p(params) / math.log1p(budget), float(params)])


def test_the_gp_sees_each_methods_exact_share_of_the_cost_in_a_space_of_several_methods(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=2)
    mixed = space_domain(load_space("mixed", shape), None)
    points = np.random.default_rng(0).integers(mixed.levels, size=(40, len(mixed.levels)))
    points = points[mixed.feasible(points)]
    shares = mixed.method_costs(points)
    assert shares.shape == (len(points), 5) and (shares > 0).any(axis=0).all()
    np.testing.assert_array_equal(shares.sum(axis=1) + shape.head_params, mixed.cost(points))
    inputs = Features(np.asarray(mixed.levels), mixed.cost(points).max(), mixed.method_costs)(points, mixed.cost(points))
    assert inputs.shape == (len(points), len(mixed.levels) + 5 + 2)
    catalogue = space_domain(load_space("catalogue", shape), None)  # the method is chosen per module group
    picks = np.random.default_rng(1).integers(catalogue.levels, size=(200, len(catalogue.levels)))
    picks = picks[catalogue.feasible(picks)]
    assert (catalogue.method_costs(picks) > 0).any(axis=0).tolist() == [True] * 5  # LoRA, LoHa, LoKr, VeRA, OFT
    assert space_domain(load_space("lora", shape), None).method_costs is None  # one method: the log cost says it all


def test_a_sampler_without_a_reference_says_so():
    domain = Domain(DOMAIN.names, DOMAIN.levels, _cost, BUDGET, None)
    study = _study(AutoPeftSampler(domain, seed=0, n_startup_trials=1))
    _run(study, 1)
    with pytest.raises(ValueError, match="reference point"):
        study.ask(domain.distributions())


class _OverBudget(optuna.samplers.BaseSampler):
    """A sampler stuck on one plan over the budget."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return 3 if param_name == "size" else 1


def test_a_sampler_stuck_over_the_budget_gets_one_random_proposal_after_five_skips_and_is_kept():
    from autopeft.optimize.propose import RANDOM_AFTER, Proposer

    stuck = _OverBudget()
    study = _study(stuck)
    reasons = []
    proposal = Proposer(study, DOMAIN, seed=0, max_skips=50, on_skip=lambda trial, reason: reasons.append(reason)).next()
    assert _cost(_point(proposal.trial)[None])[0] <= BUDGET
    assert len(reasons) >= RANDOM_AFTER and all("exceed the budget" in r for r in reasons[:RANDOM_AFTER])
    assert study.sampler is stuck  # the random proposal did not replace the study's own sampler
    skipped = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(skipped) == len(reasons) and all(t.values[0] == DOMAIN.reference[0] for t in skipped)


def test_a_proposal_of_a_plan_already_trained_under_other_choices_is_told_that_result_and_not_trained():
    from autopeft.optimize.propose import Proposer
    from autopeft.record.study import StudyRecord

    # the last layer's bit is a choice no plan uses: points that differ only there are one plan
    domain = dataclasses.replace(DOMAIN, plan_key=lambda points: [tuple(p[:-1]) for p in np.asarray(points)])
    study = _study(optuna.samplers.RandomSampler(seed=0))
    first = {"size": 2, "layer.0": 1, "layer.1": 0, "layer.2": 1, "layer.3": 0, "layer.4": 0}
    other = {**first, "layer.1": 1}
    for params in (first, {**first, "layer.4": 1}, other):
        study.enqueue_trial(params)
    proposer = Proposer(study, domain, seed=0, max_skips=50, trained_as=StudyRecord(study).trained_as)
    trained = proposer.next()
    study.tell(trained.trial, [0.71, trained.cost])
    assert proposer.next().trial.params == other
    assert proposer.skips == 1
    repeat = study.trials[1]
    assert repeat.params == {**first, "layer.4": 1} and repeat.values == [0.71, trained.cost]


def _pruned_at_first_rung(study, domain, quality) -> np.ndarray:
    trial = study.ask(domain.distributions())
    point = _point(trial)
    trial.set_user_attr(RUNG_QUALITY, [quality(point)])
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return point


def test_with_rungs_the_model_learns_from_rung_results_once_they_tell_plans_apart():
    domain = dataclasses.replace(DOMAIN, rungs=(1 / 3, 1.0))
    # every plan at the majority label's rate after the first rung: that rung says nothing, the design goes on
    flat = AutoPeftSampler(domain, seed=4, n_startup_trials=4)
    study = _study(flat)
    tried = [_pruned_at_first_rung(study, domain, lambda p: 0.5) for _ in range(6)]
    design = [p for p in flat._design if np.isfinite(_cost(p[None])[0]) and _cost(p[None])[0] <= BUDGET]
    np.testing.assert_array_equal(np.array(tried), np.array(design[:6]))
    # rung results that differ between plans: after four of them, proposals come from the model
    learning = AutoPeftSampler(domain, seed=4, n_startup_trials=4)
    study = _study(learning)
    for _ in range(4):
        _pruned_at_first_rung(study, domain, lambda p: _quality(p) - 0.1)
    _, x_obs, _, _, fractions, _ = learning._history(study)
    assert len(x_obs) == 8 and sorted(fractions) == [1 / 3] * 4 + [1.0] * 4  # pruned: also taken to end there
    proposed = _point(study.ask(domain.distributions()))
    assert not np.array_equal(proposed, design[4])
    assert _cost(proposed[None])[0] <= BUDGET


def test_a_trial_stopped_or_left_waiting_at_a_rung_is_taken_to_end_there_and_one_sent_on_is_not():
    domain = dataclasses.replace(DOMAIN, rungs=(1 / 9, 1 / 3, 1.0))
    sampler = AutoPeftSampler(domain, seed=3, n_startup_trials=4)
    study = _study(sampler)
    states = {"pruned": ([0.61, 0.64], 2, optuna.trial.TrialState.PRUNED),
              "waiting": ([0.55], 0, None),  # finished its first rung, not sent on
              "sent on": ([0.7], 1, None),  # training towards its second rung
              "unranked": ([0.5], 0, None),  # finished its first rung in bracket 2: it goes on whatever it scored
              "complete": ([0.66, 0.72], 2, optuna.trial.TrialState.COMPLETE)}
    points = {}
    for name, (qualities, rung, state) in states.items():
        trial = study.ask(domain.distributions())
        points[name] = tuple(_point(trial))
        trial.set_user_attr(RUNG_QUALITY, qualities)
        trial.set_user_attr(RUNG, rung)
        trial.set_user_attr(BRACKET, 2 if name == "unranked" else 0)
        if state is not None:
            study.tell(trial, [0.8, float(_cost(np.array([points[name]]))[0])] if name == "complete" else None, state=state)
    _, x_obs, y_obs, _, fractions, pending = sampler._history(study)
    full = {tuple(p): y[0] for p, y, f in zip(x_obs, y_obs, fractions, strict=True) if f == 1.0}
    # the search trains the pruned and the waiting trial no further: each is expected to end at its last rung
    assert full == {points["pruned"]: 0.64, points["waiting"]: 0.55, points["complete"]: 0.8}
    assert [tuple(p) for p in pending] == [points["sent on"], points["unranked"]]


def test_a_fidelity_input_separates_a_rung_result_from_a_full_training():
    features = Features(np.array([4, 2]), 100.0, rungs=(1 / 9, 1 / 3, 1.0))
    points, costs = np.array([[1, 1], [1, 1], [1, 1]]), np.array([10.0, 10.0, 10.0])
    x = features(points, costs, np.array([1 / 9, 1 / 3, 1.0]))
    np.testing.assert_allclose(x[:, -2].numpy(), [0.0, 0.5, 1.0])  # log-scaled fraction, before cost / ceiling
    np.testing.assert_allclose(features(points, costs)[:, -2].numpy(), 1.0)  # a candidate is scored as a full training


def test_a_plan_tried_under_other_choices_is_not_proposed_again():
    # the last layer's bit is a choice no plan uses: points that differ only there are one plan
    domain = dataclasses.replace(DOMAIN, plan_key=lambda points: [tuple(p[:-1]) for p in np.asarray(points)])
    study = _study(AutoPeftSampler(domain, seed=6, n_startup_trials=5))
    proposed = _run(study, 24, parallel=2)
    plans = [tuple(p[:-1]) for p in proposed]
    assert len(set(plans)) == len(plans)


def test_a_baseline_the_space_holds_is_an_observation_and_never_proposed():
    sampler = AutoPeftSampler(DOMAIN, seed=2, n_startup_trials=4)
    design = [p for p in sampler._design if np.isfinite(_cost(p[None])[0]) and _cost(p[None])[0] <= BUDGET]
    taken, failed = tuple(design[0]), tuple(design[2])  # the design's first plan is a finished baseline's, its third a failed one's
    domain = dataclasses.replace(DOMAIN, baselines={"lora-r8": taken, "ia3": failed})
    sampler = AutoPeftSampler(domain, seed=2, n_startup_trials=4)
    study = _study(sampler)
    study.set_user_attr(BASELINES, {"lora-r8": {"quality": 0.93, "params": 1}, "ia3": {"error": "out of memory"}})
    proposed = _run(study, 16)
    assert not any(tuple(p) in (taken, failed) for p in proposed)
    np.testing.assert_array_equal(np.array(proposed[:3]), np.array([design[1], design[3], design[4]]))
    _, x_obs, y_obs, costs, fractions, _ = sampler._history(study)
    x_all, y_all, _, f_all = sampler._with_baselines(study, x_obs, y_obs, costs, fractions)
    assert len(x_all) == len(x_obs) + 1 and tuple(x_all[-1]) == taken and y_all[-1, 0] == 0.93 and f_all[-1] == 1.0
