"""Multi-fidelity search (``fidelity.schedule: asha``): trials trained in rungs, promoted by their rank."""

import dataclasses
from collections import Counter

import optuna
import pytest
import torch
from safetensors.torch import load

from autopeft.api import submit
from autopeft.cli import render_snapshot, silent_rungs_text
from autopeft.errors import UserError
from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.record.pareto import Point, Reference
from autopeft.record.snapshot import snapshot
from autopeft.record.study import (BRACKET, RUNG, RUNG_FINISHED, RUNG_QUALITY, RUNG_SECONDS, TRAIN_SECONDS, States, StudyRecord,
                                   silent_rungs)
from autopeft.run.loop import SearchLoop
from autopeft.run.rungs import RungTrial, bracket_of, next_promotion, ranked
from autopeft.workers.methods.lora import Lora, LoraTarget
from autopeft.workers.plan import Plan
from autopeft.workers.trial import run_trial
from autopeft.workers.types import Fidelity, TrialRequest
from conftest import TINY_FIDELITY
from test_search import runs_of, tiny_job


@pytest.fixture(scope="module")
def reviews(reviews_csv):
    return load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))


def test_a_trial_trained_rung_after_rung_trains_exactly_as_one_training(tiny_bert, reviews):
    plan = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0, 1)), LoraTarget("ffn_out", 2, 4.0, (1,)))))
    fidelity = Fidelity(train_examples=64, eval_examples=64, batch_size=8, max_seq_length=32, epochs=2, learning_rate=0.02)
    request = TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1)
    whole = run_trial(request, reviews)
    first = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, stop_at=1 / 3), reviews)
    second = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, stop_at=0.75,
                                   resume=first.checkpoint), reviews)
    last = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, resume=second.checkpoint), reviews)
    assert [r.metrics["train_steps"] for r in (first, second, last)] == [5, 7, 4]  # 16 steps: 1/3 and 3/4 of them
    assert first.checkpoint and second.checkpoint and last.checkpoint is None
    assert not first.adapter_files and not second.adapter_files and last.adapter_files  # only the last rung's adapter
    # the same weights as one training (up to the float noise of threaded CPU kernels), not a restart's
    assert last.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], abs=2e-3)
    weights, reference = (load(r.adapter_files["adapter_model.safetensors"]) for r in (last, whole))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-3) for k in weights)
    assert abs(last.quality - whole.quality) <= 2 / 64


def test_a_checkpoint_of_another_plan_is_refused(tiny_bert, reviews):
    fidelity = Fidelity(train_examples=32, eval_examples=16, batch_size=8, max_seq_length=32)
    one = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0,)),)))
    other = Plan.of(Lora((LoraTarget("value", 4, 8.0, (1,)),)))
    first = run_trial(TrialRequest(0, one, tiny_bert, 2, "accuracy", fidelity, seed=0, stop_at=0.5), reviews)
    with pytest.raises(ValueError, match="another plan"):
        run_trial(TrialRequest(0, other, tiny_bert, 2, "accuracy", fidelity, seed=0, resume=first.checkpoint), reviews)


# -- which trial goes on: ranks by non-dominated sorting, then by the hypervolume it adds -------------

REFERENCE = Reference(quality=0.5, params=1000)


def paused(trial: int, params: int, *qualities: float, sent_to: int | None = None) -> RungTrial:
    return RungTrial(trial, params, tuple(qualities), len(qualities) - 1 if sent_to is None else sent_to, sent_to is None)


def test_trials_rank_front_by_front_and_by_the_hypervolume_they_add():
    points = [Point(0, 0.9, 900, 0), Point(1, 0.8, 100, 0), Point(2, 0.85, 500, 0), Point(3, 0.7, 600, 0)]
    # front 1: trials 1, 2, 0; trial 1 adds most (0.3 x 0.4 alone), trial 0 least; trial 3 is dominated
    assert ranked(points, REFERENCE) == [1, 2, 0, 3]


def test_the_top_third_of_a_rung_is_sent_on_once_and_the_highest_rung_goes_first():
    trials = [paused(0, 100, 0.9)] + [paused(n, 100 * (n + 1), 0.6 + 0.01 * n) for n in range(1, 5)]
    assert next_promotion(trials, 3, 3) == (0, 1)  # 5 at rung 0: one goes on, the one that dominates the rest
    trials[0] = paused(0, 100, 0.9, sent_to=1)  # sent on: never again from rung 0
    assert next_promotion(trials, 3, 3) is None
    trials.append(paused(5, 50, 0.95))  # 6 at rung 0: the top two are 5 and 0; 0 went on, 5 goes now
    assert next_promotion(trials, 3, 3) == (5, 1)
    trials += [paused(6, 60, 0.99, 0.99), paused(7, 700, 0.6, 0.6), paused(8, 800, 0.5, 0.55)]
    assert next_promotion(trials, 3, 3) == (6, 2)  # rung 1 holds three: its best goes first
    trials[6] = paused(6, 60, 0.99, 0.99, sent_to=2)
    assert next_promotion(trials, 3, 3) == (5, 1)


def test_trials_that_tie_on_the_metric_go_on_by_their_validation_loss():
    # early in training every trial predicts the majority label: the loss tells which one learns
    losses = [0.69, 0.69, 0.69, 0.55, 0.69, 0.69]
    trials = [RungTrial(n, 100 * (n + 1), (0.57,), 0, True, losses=(loss,)) for n, loss in enumerate(losses)]
    assert next_promotion(trials, 2, 3) == (3, 1)  # not the smallest plan, which a tie alone would favour
    trials[3] = RungTrial(3, 400, (0.57,), 1, False, losses=(0.55,))
    assert next_promotion(trials, 2, 3) == (0, 1)  # then the smallest of those that tie on both


def test_a_cheap_trial_still_at_the_quality_floor_goes_on_after_every_trial_above_it():
    # as on Rotten Tomatoes at a third of 500 steps: the cheapest plan still predicts the majority label
    # (0.57, the search's floor); alone it sits on the rung's first front, yet it adds nothing to the search's
    trials = [paused(0, 100, 0.6, 0.57), paused(1, 1040, 0.6, 0.72), paused(2, 1030, 0.6, 0.70),
              paused(3, 1020, 0.6, 0.69), paused(4, 1010, 0.6, 0.68), paused(5, 1000, 0.6, 0.66)]
    assert next_promotion(trials, 3, 3) == (0, 2)  # without the floor, the cheapest goes on first
    assert next_promotion(trials, 3, 3, floor=0.57) == (1, 2)
    trials[1] = paused(1, 1040, 0.6, 0.72, sent_to=2)
    second, rung = next_promotion(trials, 3, 3, floor=0.57)  # the top two are both above the floor
    assert second != 0 and rung == 2
    trials[second] = paused(second, trials[second].params, *trials[second].qualities, sent_to=2)
    assert next_promotion(trials, 3, 3, floor=0.57) is None
    # when the rung's quota is larger than the trials above the floor, those at it fill it, ranked as before
    at_floor = [paused(n, 100 * (n + 1), 0.57) for n in range(5)] + [paused(5, 600, 0.61)]
    assert next_promotion(at_floor, 2, 3, floor=0.57) == (5, 1)
    at_floor[5] = paused(5, 600, 0.61, sent_to=1)
    assert next_promotion(at_floor, 2, 3, floor=0.57) == (0, 1)


def test_a_trial_of_a_later_bracket_goes_on_unranked_below_it_and_is_ranked_from_it():
    # a plan at a low learning rate still at the floor after the first rung: ranked there, it would wait
    slow = dataclasses.replace(paused(9, 100, 0.5), bracket=2)
    ranked_only = [paused(n, 100 * (n + 1), 0.7 + 0.01 * n) for n in range(3)]
    best = next_promotion(ranked_only, 3, 3, floor=0.5)
    assert next_promotion([*ranked_only, dataclasses.replace(slow, bracket=0)], 3, 3, floor=0.5) == best != (9, 1)
    assert next_promotion([*ranked_only, slow], 3, 3, floor=0.5) == (9, 1)  # it goes first, unranked
    slow = dataclasses.replace(slow, sent_to=1, paused=False)
    assert next_promotion([*ranked_only, slow], 3, 3, floor=0.5) == best
    assert next_promotion([*ranked_only[:2], slow], 3, 3, floor=0.5) is None  # nor does it count towards the top third
    # from rung 1 on a trial of bracket 1 is ranked with the rest; one of bracket 2 goes on to the end
    middle = [dataclasses.replace(paused(n, 100, 0.7, 0.6 + 0.01 * n), bracket=1) for n in range(3)]
    assert next_promotion(middle, 3, 3) == (2, 2)
    slow = dataclasses.replace(paused(9, 100, 0.5, 0.55), bracket=2)
    assert next_promotion([*middle[:2], slow], 3, 3) == (9, 2)
    assert next_promotion([*middle[:2], dataclasses.replace(slow, bracket=1)], 3, 3) == (1, 2)


def test_new_trials_are_spread_over_the_brackets_in_hyperbands_shares_at_every_length():
    assert {bracket_of(n, 1, 3, 3) for n in range(100)} == {0}
    for length in (17, 60, 1700):
        counts = Counter(bracket_of(n, 3, 3, 3) for n in range(length))
        for bracket, share in enumerate((9, 5, 3)):  # 9 + 5 + 3 trials per round of Hyperband, rungs 1/9, 1/3, 1
            assert abs(counts[bracket] - length * share / 17) <= 1.5, (length, counts)
    assert Counter(bracket_of(n, 2, 3, 3) for n in range(1400)) == {0: 900, 1: 500}  # the brackets that train longest left out
    assert abs(Counter(bracket_of(n, 2, 2, 2) for n in range(400))[1] - 200) <= 1.5  # two rungs: half and half


def test_a_running_or_failed_trial_is_not_sent_on():
    trials = [paused(n, 100, 0.6 + 0.01 * n) for n in range(3)]
    trials[2] = RungTrial(2, 100, (0.62,), 0, paused=False)
    assert next_promotion(trials, 2, 3) is None


def test_a_rung_at_which_every_trial_scored_the_same_is_named_with_what_to_change():
    # as on Rotten Tomatoes at 7 of 63 steps: every plan still predicts the majority label
    qualities = [[0.57, 0.61], [0.57, 0.74], [0.57], [0.57], [0.57, 0.57]]
    assert silent_rungs(qualities, least=3) == [(0, 5, 0.57)]  # rung 2 tells plans apart
    assert silent_rungs(qualities, least=6) == []  # too few trials to say
    assert silent_rungs([[0.5], [0.6], [0.5]], least=3) == []
    text = silent_rungs_text([(0, 5, 0.57)], (1 / 9, 1 / 3, 1.0))
    assert "Rung 1 of 3" in text and "all 5 trials scored 0.5700" in text and "fidelity.rungs: [0.333, 1]" in text
    both = silent_rungs_text([(0, 5, 0.57), (1, 3, 0.57)], (1 / 9, 1 / 3, 1.0))
    assert "Rung 2 of 3" in both and "fidelity.rungs" not in both and "fidelity.schedule: full" in both


# -- a search with rungs, on real Ray and MLflow ------------------------------------------------------

def test_a_search_with_rungs_stopped_mid_rung_resumes_that_rung_and_counts_pruned_trials(
        tmp_path, tiny_bert, reviews_csv, ray_local, monkeypatch):
    fidelity = {**TINY_FIDELITY, "epochs": 2, "schedule": "asha", "rungs": [0.25, 1.0], "reduction_factor": 2, "brackets": 2}
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, fidelity=fidelity, budget={"trials": 4, "parallel": 1})
    sent_on, loops = [], []
    send_on = SearchLoop._send_on

    def send_on_then_stop(loop, number, rung):  # the driver is stopped right after it sends a trial on
        send_on(loop, number, rung)
        sent_on.append(number)
        loops.append(loop)
        raise KeyboardInterrupt

    monkeypatch.setattr(SearchLoop, "_send_on", send_on_then_stop)
    with pytest.raises(KeyboardInterrupt):
        submit(job, progress=False)
    for actor in loops[0].pool.idle + [work.actor for work in loops[0].running.values()]:
        ray_local.kill(actor)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    stopped = study.trials[sent_on[0]]
    assert stopped.state == States.RUNNING and stopped.user_attrs[RUNG] == 1 and len(stopped.user_attrs[RUNG_QUALITY]) == 1
    assert job.layout.checkpoint(stopped.number, 0).is_file()

    monkeypatch.setattr(SearchLoop, "_send_on", send_on)
    summary = submit(job, progress=False)
    assert summary.finished == 4  # pruned trials count against the budget: 4 plans were trained, some stopped early
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trials = study.trials
    assert len(trials) == 4 and not [t for t in trials if t.state == States.RUNNING]
    resumed = trials[stopped.number]
    assert resumed.state == States.COMPLETE and resumed.user_attrs[RUNG_QUALITY] == stopped.user_attrs[RUNG_QUALITY]
    complete = [t for t in trials if t.state == States.COMPLETE]
    pruned = [t for t in trials if t.state == States.PRUNED]
    assert complete and pruned and len(complete) + len(pruned) == 4  # the worst of the first rung stopped there
    # two brackets: trials of bracket 1 go on unranked; the two of bracket 0 are ranked, and the worse one stops
    assert {t.number: t.user_attrs[BRACKET] for t in trials} == {n: bracket_of(n, 2, 2, 2) for n in range(4)}
    assert sorted(t.user_attrs[BRACKET] for t in complete) == [0, 1, 1] and [t.user_attrs[BRACKET] for t in pruned] == [0]
    assert all(len(t.user_attrs[RUNG_QUALITY]) == 1 for t in complete + pruned)  # every rung ran once
    assert resumed.user_attrs[RUNG_SECONDS] == stopped.user_attrs[RUNG_SECONDS]  # and its seconds count once
    for t in complete + pruned:  # each rung's seconds and end, for the compute a search spent up to any moment
        first_rung = t.user_attrs[RUNG_SECONDS][0]
        assert len(t.user_attrs[RUNG_FINISHED]) == 1 and t.user_attrs[RUNG_FINISHED][0] >= t.datetime_start.timestamp()
        assert (first_rung < t.user_attrs[TRAIN_SECONDS]) if t.state == States.COMPLETE else (first_rung == t.user_attrs[TRAIN_SECONDS])
    assert {p.trial for p in summary.front} <= {t.number for t in complete}  # the front is full trainings only
    assert summary.pruned == len(pruned) and f"{len(pruned)} pruned after a rung" in summary.failed_text()
    assert summary.silent_rungs == silent_rungs([t.user_attrs[RUNG_QUALITY] for t in complete + pruned], 2)
    watched = render_snapshot(snapshot(StudyRecord.load(job)))
    assert f"0 trials waiting after a rung, {len(pruned)} pruned" in watched
    assert ("told no plan apart" in watched) == bool(summary.silent_rungs)
    assert not list(job.layout.checkpoint(0, 0).parent.iterdir())  # no checkpoint is left behind
    assert all(job.layout.trial_adapter(t.number).is_dir() for t in complete)
    with pytest.raises(UserError, match=r"fidelity.rungs: \[0.25, 1.0\]"):  # what its trials' rungs meant
        submit(job.model_copy(update={"fidelity": job.fidelity.model_copy(update={"rungs": (0.5, 1.0)})}), progress=False)

    client, _, children = runs_of(job)
    runs = {c.data.tags["autopeft.trial"]: c for c in children}
    history = client.get_metric_history(runs[str(resumed.number)].info.run_id, "rung_quality")
    assert [m.step for m in history] == [0]  # its first rung was not trained again
    assert runs[str(resumed.number)].info.status == "FINISHED" and "quality" in runs[str(resumed.number)].data.metrics
    assert {int(n): int(r.data.params["bracket"]) for n, r in runs.items()} == {n: bracket_of(n, 2, 2, 2) for n in range(4)}
    for t in pruned:
        assert runs[str(t.number)].data.tags["autopeft.pruned"] == "after rung 1 of 2"
        assert "quality" not in runs[str(t.number)].data.metrics


def test_rungs_need_the_built_in_trainer(tmp_path, tiny_bert, reviews_csv):
    with pytest.raises(UserError, match="only the built-in trainer"):
        tiny_job(tmp_path, tiny_bert, reviews_csv, fidelity={**TINY_FIDELITY, "schedule": "asha"}, trainer="trainers:sleeps")
    with pytest.raises(UserError, match="not increasing fractions"):
        tiny_job(tmp_path, tiny_bert, reviews_csv, fidelity={**TINY_FIDELITY, "schedule": "asha", "rungs": [0.5, 0.9]})
    with pytest.raises(UserError, match="brackets 3 is more than the 2 rungs"):
        tiny_job(tmp_path, tiny_bert, reviews_csv, fidelity={**TINY_FIDELITY, "schedule": "asha", "rungs": [0.5, 1], "brackets": 3})
