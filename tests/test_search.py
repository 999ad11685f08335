"""A real search: Optuna study, local Ray actors, MLflow SQLite store, on a tiny BERT and real data."""

from __future__ import annotations

import json
import shutil
import socket

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from autopeft.api import read_front, submit
from autopeft.cli import main
from autopeft.job.load import load_job
from autopeft.record.study import StudyRecord
from conftest import TINY_FIDELITY, TINY_FLOOR, trials_being_created, write_job


def tiny_job(tmp_path, tiny_bert, reviews_csv, **overrides):
    fields = dict(
        model=tiny_bert,
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        fidelity=TINY_FIDELITY,
        budget={"trials": 4, "parallel": 2},
        optimizer={"sampler": "autopeft", "n_startup_trials": 2},
    )
    fields.update(overrides)
    return load_job(write_job(tmp_path, **fields))


def runs_of(job):
    client = MlflowClient(tracking_uri=job.mlflow_uri)
    experiment = client.get_experiment_by_name(job.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("autopeft.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("autopeft.kind") == "trial"]
    return client, parents, children


def test_search_records_every_trial_the_front_and_the_hypervolume(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, objectives={"quality_floor": TINY_FLOOR})
    summary = submit(job, progress=False)
    assert summary.finished == 4 and summary.failed == 0

    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs]
    assert len(complete) == 4
    for t in complete:
        assert 0.0 <= t.values[0] <= 1.0
        assert t.values[1] > 0 and t.user_attrs["trainable_pct"] > 0
        assert (job.run_dir / "trials" / f"{t.number:04d}" / "adapter" / "adapter_model.safetensors").is_file()

    client, parents, children = runs_of(job)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    by_trial = {int(c.data.tags["autopeft.trial"]): c for c in children}
    for t in complete:
        child = by_trial[t.number]
        assert child.info.status == "FINISHED"
        assert child.data.metrics["accuracy"] == pytest.approx(t.values[0])
        assert child.data.metrics["trainable_params"] == t.values[1]
        assert child.data.params["plan"] == t.user_attrs["plan_summary"]
        assert child.data.tags["autopeft.node"] == t.user_attrs["node"] and t.user_attrs["node"].startswith(socket.gethostname())

    history = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values == sorted(values) and values[-1] == pytest.approx(summary.hypervolume)
    assert float(parent.data.params["reference.quality"]) == study.user_attrs["reference"]["quality"]
    front, reference = read_front(job)
    sizes = client.get_metric_history(parent.info.run_id, "front_size")
    assert sorted(sizes, key=lambda m: m.step)[-1].value == len(front)
    best = client.get_metric_history(parent.info.run_id, "best_quality")
    assert max(m.value for m in best) == max(p.quality for p in front)
    assert parent.data.tags["autopeft.status"] == "finished" and parent.data.tags["autopeft.sampler"] == "autopeft"
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.json", "pareto.csv", "pareto.png", "pareto.html", "job.yaml", "search_space.yaml", "reference.json",
            "hypervolume.png", "placement.png", "dimensions.png", "report.html"} <= artifacts
    page = open(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path))).read()
    assert "<b>finished</b>" in page and "Every trial (4)" in page
    logged = json.loads(open(client.download_artifacts(parent.info.run_id, "pareto.json", str(tmp_path))).read())
    assert [row["trial"] for row in logged] == [p.trial for p in front]
    assert reference.params == study.user_attrs["reference"]["params"]


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:fails_on_odd_trials")
    summary = submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = [t for t in study.trials if "skipped" not in t.user_attrs]
    failed = [t for t in trained if t.state == optuna.trial.TrialState.FAIL]
    assert summary.finished == len(trained) == 4
    assert summary.failed == len(failed) == sum(t.number % 2 for t in trained) >= 1
    assert {t.number % 2 for t in failed} == {1}
    assert all(f"boom in trial {t.number}" in t.user_attrs["error"] for t in failed)
    _, _, children = runs_of(job)
    statuses = {int(c.data.tags["autopeft.trial"]): c.info.status for c in children}
    assert statuses == {t.number: "FAILED" if t.number % 2 else "FINISHED" for t in trained}
    assert len(StudyRecord(study).finished_points()) == 4 - len(failed) >= 1


def test_a_search_whose_every_trial_fails_ends_with_the_last_error_the_fix_and_exit_status_1(tmp_path, tiny_bert, reviews_csv,
                                                                                             ray_local, capsys):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:always_fails", budget={"trials": 2, "parallel": 1})
    job_file = str(tmp_path / "job.yaml")
    assert main(["submit", job_file, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert ("No trial finished: 2 failed (2 error). The last one: ValueError: no plan trains in trial 1. Every trial's "
            f"reason: autopeft watch {job_file} --once.") in out
    assert f"autopeft submit {job_file} --trials 4" in out and "Export it" not in out
    assert StudyRecord(optuna.load_study(study_name=job.name, storage=job.optuna_storage)).done() == (2, 2)


def test_a_baseline_that_failed_is_shown_with_its_reason_and_trains_again_when_the_job_is_submitted_again(
        tmp_path, tiny_bert, reviews_csv, ray_local, capsys):
    import random
    import tempfile
    from pathlib import Path

    from autopeft.cli import render_snapshot
    from autopeft.record.snapshot import snapshot

    seed = random.randrange(10**6)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:baselines_fail_once", baselines=["lora-r8"],
                   budget={"trials": 1, "parallel": 1}, seed=seed)
    job_file = str(tmp_path / "job.yaml")
    try:
        assert main(["submit", job_file, "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert ("Baselines that failed: lora-r8 (RuntimeError: lora-r8 could not train this time). Submit the same job "
                "again to retry it.") in out
        record = StudyRecord(optuna.load_study(study_name=job.name, storage=job.optuna_storage))
        watched = render_snapshot(snapshot(record))
        assert "finished; 1 baseline failed: submit the same job again to retry it" in watched
        assert "baselines 1/1, 1 failed" in watched
        assert " baseline  lora-r8: RuntimeError: lora-r8 could not train this time" in watched
        capsys.readouterr()
        assert main(["pareto", job_file]) == 0 and "Baselines that failed: lora-r8 (RuntimeError: " in capsys.readouterr().out
        assert main(["pareto", job_file, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["failed_baselines"] == {
            "lora-r8": "RuntimeError: lora-r8 could not train this time"}
        summary = submit(job, progress=False)
        assert summary.failed_baselines == {} and set(summary.baselines) == {"lora-r8"}
        assert summary.finished == 1  # the trial is not trained again
        watched = render_snapshot(snapshot(StudyRecord(optuna.load_study(study_name=job.name, storage=job.optuna_storage))))
        assert watched.startswith(f"search '{job.name}': finished\n") and "failed:" not in watched
    finally:
        (Path(tempfile.gettempdir()) / f"autopeft-test-baseline-failed-{seed}-lora-r8").unlink(missing_ok=True)


def test_a_worker_that_dies_is_replaced(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:dies_in_first_trial",
                   budget={"trials": 3, "parallel": 1})
    summary = submit(job, progress=False)
    assert summary.finished == 3 and summary.failed == 1
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = [t for t in study.trials if "skipped" not in t.user_attrs]
    assert trained[0].number == 0 and trained[0].state == optuna.trial.TrialState.FAIL
    assert "exit" in trained[0].user_attrs["error"].lower() or "died" in trained[0].user_attrs["error"].lower()
    assert trained[0].user_attrs["failure"] == "worker lost"  # on each of its 1 + max_retries attempts
    assert [t.state for t in trained[1:]] == [optuna.trial.TrialState.COMPLETE] * 2
    _, _, children = runs_of(job)
    first = next(c for c in children if c.data.tags["autopeft.trial"] == "0")
    assert first.data.tags["autopeft.retries"] == "2" and first.data.tags["autopeft.failure"] == "worker lost"


def test_a_trial_whose_worker_is_lost_runs_again_and_does_not_use_up_the_budget(tmp_path, tiny_bert, reviews_csv, ray_local):
    import random
    import tempfile
    from pathlib import Path

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:dies_once_in_each_trial",
                   budget={"trials": 3, "parallel": 2}, seed=random.randrange(10**6))
    try:
        summary = submit(job, progress=False)
    finally:
        for marker in Path(tempfile.gettempdir()).glob(f"autopeft-test-died-{job.seed}-*"):
            marker.unlink()
    assert summary.finished == 3 and summary.failed == 0
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = StudyRecord(study).trained()
    assert [t.state for t in trained] == [optuna.trial.TrialState.COMPLETE] * 3
    _, _, children = runs_of(job)
    assert len(children) == 3 and all(c.info.status == "FINISHED" and c.data.tags["autopeft.retries"] == "1" for c in children)


def test_a_search_starts_its_own_ray_where_a_killed_ray_start_left_its_address_behind(tmp_path, tiny_bert, reviews_csv):
    """Ray's own default joins the cluster named in ``<ray temp dir>/ray_current_cluster`` and, when that
    cluster is dead, waits for it forever."""
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from conftest import free_port

    tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 1, "parallel": 1})
    ray_tmp = Path(tempfile.mkdtemp(prefix="apr-"))  # short: Ray's socket paths live under it
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    try:
        run = subprocess.run([sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto front (" in run.stdout


def test_a_hung_trial_is_stopped_at_the_timeout_and_the_search_goes_on(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:hangs_in_first_trial",
                   budget={"trials": 3, "parallel": 2, "trial_timeout": 30})
    summary = submit(job, progress=False)
    assert summary.finished == 3 and summary.failed == 1
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["failure"] == "timeout"
    assert "trial timeout of 30 s" in first.user_attrs["error"]
    _, _, children = runs_of(job)
    statuses = {c.data.tags["autopeft.trial"]: (c.info.status, c.data.tags.get("autopeft.failure")) for c in children}
    assert statuses["0"] == ("FAILED", "timeout") and len(statuses) == 3


def test_a_worker_slow_to_start_does_not_count_against_the_trial_timeout(tmp_path, tiny_bert, reviews_csv, ray_local,
                                                                         monkeypatch):
    import trainers

    monkeypatch.setattr("autopeft.workers.trial.TrialWorker", trainers.StartsSlowly)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:scores_at_once",
                   budget={"trials": 1, "parallel": 1, "trial_timeout": 25})
    summary = submit(job, progress=False)
    assert (summary.finished, summary.failed) == (1, 0)


def test_trials_run_at_the_drivers_priority_so_other_work_on_the_machine_does_not_starve_them(
        tmp_path, tiny_bert, reviews_csv, ray_local):
    """Ray's own default runs its workers at niceness 15: beside one busy process per core, a trial got a few percent
    of a core, and a 3-trial search on the tiny model ran for over 12 minutes instead of 2."""
    import os

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:reports_its_niceness",
                   budget={"trials": 2, "parallel": 2})
    assert submit(job, progress=False).finished == 2
    trained = StudyRecord(optuna.load_study(study_name=job.name, storage=job.optuna_storage)).trained()
    assert [t.user_attrs["metrics"]["niceness"] for t in trained] == [os.nice(0)] * 2


def test_a_trial_without_a_finite_quality_fails_with_its_reason(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:returns_nan_on_odd_trials",
                   budget={"trials": 3, "parallel": 1})
    summary = submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = StudyRecord(study).trained()
    odd = [t for t in trained if t.number % 2]
    assert odd and summary.failed == len(odd) and summary.finished == 3
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs["failure"] == "non-finite quality" for t in odd)
    _, _, children = runs_of(job)
    failed = {c.data.tags["autopeft.trial"] for c in children if c.info.status == "FAILED"}
    assert failed == {str(t.number) for t in odd}
    assert all(p.quality == p.quality for p in summary.front)  # no NaN on the front
    assert f"{len(odd)} failed ({len(odd)} non-finite quality)" == summary.failed_text()


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_second_driver_is_refused_while_the_first_runs_and_a_signal_stops_it_cleanly(tmp_path, tiny_bert, reviews_csv,
                                                                                       stop):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:sleeps", budget={"trials": 2, "parallel": 1})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    driver = subprocess.Popen([sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--no-progress"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    running = []
    while not running and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(2)
        if job.layout.study_db.is_file():
            trials = trials_being_created(job.name, job.optuna_storage) or []
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
            running = running and runs_of(job)[2]  # its MLflow run exists: sent to a worker, not only proposed
    assert running, driver.communicate(timeout=60)

    from autopeft.errors import UserError

    with pytest.raises(UserError, match=f"is being searched by process {driver.pid} on {socket.gethostname()}"):
        submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # the first driver's trial, untouched
    driver.send_signal(getattr(signal, stop))
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted; submit the same job again to resume" in err and "Traceback" not in err
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert all(t.user_attrs.get("interrupted") for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    _, parents, children = runs_of(job)
    assert children and all(c.info.status != "RUNNING" for c in children), err[-3000:]
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["autopeft.status"] == "stopped"


def test_trials_proposed_while_every_worker_is_busy_run_the_budget_exactly_with_their_runs_recorded(
        tmp_path, tiny_bert, reviews_csv, ray_local, monkeypatch):
    import threading

    from autopeft.run import loop

    monkeypatch.setattr(loop, "AHEAD_SHARE", 0.0)  # propose ahead however fast proposals are
    threads = []
    original = loop.SearchLoop._timed_proposal

    def timed_proposal(self):
        threads.append(threading.current_thread().name)
        return original(self)

    monkeypatch.setattr(loop.SearchLoop, "_timed_proposal", timed_proposal)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 6, "parallel": 2})
    summary = submit(job, progress=False)
    assert summary.finished == 6 and summary.failed == 0
    assert any(name.startswith("autopeft-propose") for name in threads)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    trained = StudyRecord(study).completed()
    assert len(trained) == 6
    _, _, children = runs_of(job)
    runs = {c.info.run_id: c for c in children}
    assert len(runs) == 6 and all(c.info.status == "FINISHED" for c in children)
    for t in trained:
        assert runs[t.user_attrs["mlflow_run_id"]].data.tags["autopeft.trial"] == str(t.number)


def test_a_stop_between_proposing_a_trial_and_sending_it_leaves_no_trial_running(tmp_path, tiny_bert, reviews_csv,
                                                                                 ray_local, monkeypatch):
    from autopeft.run.pool import WorkerPool

    def stopped_here(self, *args, **kwargs):  # Ctrl-C while the trial is being sent to its worker
        raise KeyboardInterrupt

    monkeypatch.setattr(WorkerPool, "submit", stopped_here)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 1})
    with pytest.raises(KeyboardInterrupt):
        submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    assert len(study.trials) == 1
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and study.trials[0].user_attrs["interrupted"]
    _, parents, _ = runs_of(job)
    assert parents[0].info.status == "KILLED"


def test_custom_trainer_receives_model_plan_data_and_fidelity(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:evaluate_untrained",
                   budget={"trials": 2, "parallel": 1})
    submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = [t for t in study.trials if "skipped" not in t.user_attrs]
    assert len(trained) == 2 and all(t.user_attrs["metrics"]["custom"] == 1.0 for t in trained)


def test_workers_freed_together_start_trials_proposed_from_one_fit_of_the_model(tmp_path, tiny_bert, reviews_csv,
                                                                                   ray_local, monkeypatch):
    from autopeft.optimize.autopeft_sampler import sampler as sampler_module

    fits = []  # the observations each fit of the GP saw
    fit = sampler_module.fit_quality_gp
    monkeypatch.setattr(sampler_module, "fit_quality_gp", lambda x, y: fits.append(len(y)) or fit(x, y))
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:scores_by_plan", budget={"trials": 3, "parallel": 3},
                   resources={"cpus": 0.5}, optimizer={"sampler": "autopeft", "n_startup_trials": 3})
    submit(job, progress=False)
    assert fits == []  # the quasi-random design
    more = job.model_copy(update={"budget": job.budget.model_copy(update={"trials": 6})})
    summary = submit(more, progress=False)  # three workers free at once, three trials to propose
    assert summary.finished == 6 and summary.failed == 0
    assert fits == [3]
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    plans = [t.user_attrs["plan_summary"] for t in study.trials]
    assert len(plans) == 6 and len(set(plans)) == 6  # the later proposals knew the earlier ones as running


def test_the_pool_hands_over_every_result_that_is_ready(ray_local):
    from autopeft.run.pool import ready_results

    @ray_local.remote
    def after(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    quick = [after.remote(0.0) for _ in range(3)]
    slow = after.remote(30.0)
    ray_local.get(quick)
    assert set(ready_results(ray_local, [*quick, slow], timeout=5)) == set(quick)  # all three, not only the first
    assert ready_results(ray_local, [slow], timeout=0.1) == []
    ray_local.cancel(slow, force=True)


def test_resubmitting_resumes_the_same_study_and_parent_run(tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 2})
    submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    orphan = study.ask()  # a trial left running by a driver that was killed
    more = job.model_copy(update={"budget": job.budget.model_copy(update={"trials": 3})})
    summary = submit(more, progress=False)
    assert summary.finished == 3
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    left = study.trials[orphan.number]
    assert left.state == optuna.trial.TrialState.FAIL and "interrupted" in left.user_attrs["error"]
    client, parents, children = runs_of(job)
    assert len(parents) == 1 and len(children) == 3  # the interrupted trial did not use up the budget
    steps = [m.step for m in client.get_metric_history(parents[0].info.run_id, "hypervolume")]
    assert sorted(steps) == [1, 2, 3]


def test_a_job_changed_in_what_its_trials_mean_is_refused_on_resume_and_one_changed_in_how_much_resumes(
        tmp_path, tiny_bert, reviews_csv, ray_local, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("name: small\nmodules:\n  lora:\n    groups:\n      query: [0, 2, 4]\n      value: [0, 2, 4]\nlayers: all\n")
    fields = dict(model=tiny_bert, search_space=str(space), fidelity=TINY_FIDELITY, budget={"trials": 2, "parallel": 2},
                  task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment",
                        "validation_size": 100})
    job = load_job(write_job(tmp_path, **fields))
    submit(job, progress=False)
    trials = len(StudyRecord.load(job).study.trials)
    runs = len(runs_of(job)[2])

    def resubmit(**changes) -> tuple[int, str]:
        code = main(["submit", str(write_job(tmp_path, **{**fields, **changes})), "--no-progress"])
        return code, capsys.readouterr().err

    for changes, words in [
        ({"fidelity": {**TINY_FIDELITY, "epochs": 3}}, ["fidelity.epochs: 1.0", "this job file has 3"]),
        ({"fidelity": {**TINY_FIDELITY, "learning_rate": 0.001}}, ["fidelity.learning_rate"]),
        ({"objectives": {"quality_floor": 0.3}}, ["objectives.quality_floor: None", "0.3"]),
        ({"task": {**fields["task"], "split_seed": 1}}, ["task.split_seed: 0"]),
        ({"fidelity": {**TINY_FIDELITY, "base_dtype": "bfloat16"}}, ["fidelity.base_dtype: 'float32'", "has 'bfloat16'"]),
    ]:
        code, err = resubmit(**changes)
        assert code == 2 and all(w in err for w in words), err
        assert "was started with" in err and "or give the job a new name to start another search" in err
    study = StudyRecord.load(job).study  # as a search started before autopeft had base_dtype records it
    stored = study.user_attrs["job"]
    study.set_user_attr("job", {**stored, "fidelity": {k: v for k, v in stored["fidelity"].items() if k != "base_dtype"}})
    code, err = resubmit(fidelity={**TINY_FIDELITY, "base_dtype": "bfloat16"})
    assert code == 2 and "was started before autopeft had fidelity.base_dtype, as its default 'float32'" in err, err
    moved = tmp_path / "moved"
    moved.mkdir()
    relabelled = pd.read_csv(reviews_csv)
    relabelled["sentiment"] = relabelled["sentiment"].map({"rotten": "negative", "fresh": "positive"})
    relabelled.to_csv(moved / "relabelled.csv", index=False)
    code, err = resubmit(task={**fields["task"], "train_file": str(moved / "relabelled.csv")})
    assert code == 2 and "was started on data labelled" in err and "'negative', 'positive'" in err, err
    space.write_text(space.read_text().replace("query: [0, 2, 4]", "query: [0, 4, 8]"))  # the space file edited in place
    code, err = resubmit()
    assert code == 2 and "search_space" in err and "dimension lora.query.rank" in err, err
    assert len(StudyRecord.load(job).study.trials) == trials and len(runs_of(job)[2]) == runs  # nothing written

    space.write_text(space.read_text().replace("query: [0, 4, 8]", "query: [0, 2, 4]"))
    shutil.copy(reviews_csv, moved / "reviews.csv")  # the same data, moved
    code, err = resubmit(fidelity={**TINY_FIDELITY, "schedule": "asha"})
    assert code == 2 and "fidelity.schedule: 'full'" in err, err
    code, err = resubmit(task={**fields["task"], "train_file": str(moved / "reviews.csv")}, budget={"trials": 3, "parallel": 1},
                         baselines=["lora-r8"], optimizer={"sampler": "random"},
                         fidelity={**TINY_FIDELITY, "rungs": [0.5, 1], "brackets": 2})  # rungs mean nothing here
    assert code == 0, err
    record = StudyRecord.load(job)
    assert len(record.study.trials) == trials + 1 and "lora-r8" in record.baselines
    assert len(runs_of(job)[1]) == 1  # the same search, resumed


def test_a_baseline_the_space_holds_is_never_trained_again_as_a_trial(tmp_path, tiny_bert, reviews_csv, ray_local):
    # three plans: LoRA r=8 on query, on value, on both; the last is lora-r8, which the job trains as a baseline
    (tmp_path / "qv.yaml").write_text("name: qv\nmodules:\n  lora:\n    groups: {query: [0, 8], value: [0, 8]}\n"
                                      "layers: all\nlearning_rate: fixed\n")
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, search_space=str(tmp_path / "qv.yaml"), budget={"trials": 2, "parallel": 1},
                   baselines=["lora-r8"], seed=1)
    summary = submit(job, progress=False)
    assert summary.finished == 2 and "lora-r8" in summary.baselines
    with StudyRecord.load(job) as record:
        plans = sorted(record.plan_of(t.number).describe() for t in record.study.trials)
    assert plans == ["query:r8 @ layers 0-1", "value:r8 @ layers 0-1"], plans


def test_mixed_space_search_with_named_baselines(tmp_path, tiny_bert, reviews_csv, ray_local):
    from autopeft.api import read_baselines

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, search_space="mixed", budget={"trials": 3, "parallel": 2},
                   baselines=["lora-r8", "houlsby", "ia3", "mam", "full", "lora-r8+pooler"])
    summary = submit(job, progress=False)
    assert summary.finished == 3
    assert set(summary.baselines) == {"lora-r8", "houlsby", "ia3", "mam", "full", "lora-r8+pooler"}
    assert summary.baselines["full"].params > summary.baselines["mam"].params > summary.baselines["ia3"].params
    hidden = 32  # the tiny BERT's pooler: one dense layer, trained where the plan says
    assert summary.baselines["lora-r8+pooler"].params - summary.baselines["lora-r8"].params == hidden * hidden + hidden
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs]
    assert len(trained) == 3  # baselines stay out of the study
    client, parents, children = runs_of(job)
    experiment = client.get_experiment_by_name(job.name)
    baseline_runs = client.search_runs([experiment.experiment_id], "tags.`autopeft.kind` = 'baseline'")
    assert {r.data.tags["autopeft.baseline"] for r in baseline_runs} == set(summary.baselines)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in baseline_runs)
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "baselines.json" in artifacts
    assert read_baselines(job) == summary.baselines
    again = submit(job, progress=False)  # finished baselines are not run again
    assert again.baselines == summary.baselines


def test_a_tight_budget_is_never_exceeded_and_the_search_still_finishes(tmp_path, tiny_bert, reviews_csv, ray_local):
    budget = 4000  # about a third of the LoRA space's plans on the tiny BERT are larger
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 4, "parallel": 2, "max_trainable_params": budget},
                   optimizer={"sampler": "gp", "n_startup_trials": 2})
    summary = submit(job, progress=False)
    assert summary.finished == 4
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = [t for t in study.trials if "skipped" not in t.user_attrs]
    skipped = [t for t in study.trials if "skipped" in t.user_attrs]
    assert len(trained) == 4 and all(t.values[1] <= budget for t in trained)
    assert skipped and all("exceed the budget" in t.user_attrs["skipped"] or "every adapter off" in t.user_attrs["skipped"]
                           for t in skipped)
    assert not any((job.run_dir / "trials" / f"{t.number:04d}").exists() for t in skipped)
    assert all(p.params <= budget for p in summary.front)


def test_a_killed_drivers_trials_run_again_on_resume_their_runs_are_closed_and_a_lost_mlflow_store_is_rebuilt(
        tmp_path, tiny_bert, reviews_csv, ray_local):
    import random

    from autopeft.optimize.domain import space_domain
    from autopeft.record.tracking import MlflowWriter
    from autopeft.run.prepare import prepare
    from conftest import random_point

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 2})
    submit(job, progress=False)
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    prepared = prepare(job)
    rng = random.Random(7)
    while True:  # a trainable plan no trial has trained
        params = random_point(prepared.space, rng)
        plan = prepared.space.decode(params)
        if not plan.is_empty and StudyRecord(study).trained_as(params) is None:
            break
    study.enqueue_trial(params)
    orphan = study.ask(space_domain(prepared.space, None).distributions())
    tracker = MlflowWriter(job.mlflow_uri, job.name)
    tracker.parent_id = StudyRecord(study).parent_run_id
    run_id = tracker.start_trial(orphan.number, {"plan": plan.describe()})
    orphan.set_user_attr("mlflow_run_id", run_id)  # as a driver killed mid-trial leaves it: RUNNING in both stores

    more = job.model_copy(update={"budget": job.budget.model_copy(update={"trials": 3})})
    summary = submit(more, progress=False)
    assert summary.finished == 3 and summary.failed == 0
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    left = study.trials[orphan.number]
    assert left.state == optuna.trial.TrialState.FAIL and left.user_attrs["interrupted"]
    assert MlflowClient(tracking_uri=job.mlflow_uri).get_run(run_id).info.status == "KILLED"
    rerun = [t for t in StudyRecord(study).completed() if t.number > orphan.number]
    assert [t.params for t in rerun] == [params]  # the interrupted plan, trained again, and nothing else
    keys = [tuple(sorted(t.params.items())) for t in StudyRecord(study).completed()]
    assert len(keys) == len(set(keys)) == 3

    import subprocess
    import sys

    job.layout.mlflow_db.unlink()  # the tracking store is lost: the next resume (a new process) starts a new parent run
    resumed = subprocess.run([sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--trials", "4",
                              "--no-progress"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "4 trials, 0 failed" in resumed.stdout
    import sqlite3

    with sqlite3.connect(job.layout.mlflow_db) as db:  # the new store (this process's MLflow caches the old one)
        runs = sorted(db.execute("SELECT name, status FROM runs").fetchall())
    assert runs == [(job.name, "FINISHED"), ("trial-004", "FINISHED")]


def test_a_lease_is_refused_while_its_heartbeat_is_fresh_and_taken_over_once_stale(tmp_path, tiny_bert, reviews_csv, ray_local):
    import time

    from autopeft.errors import UserError

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 2})
    job.layout.root.mkdir(parents=True)
    study = optuna.create_study(study_name=job.name, storage=job.optuna_storage, directions=["maximize", "minimize"])
    lease = {"token": "elsewhere", "host": "gpu-node-7", "pid": 4242, "since": "2026-11-24T08:00:00+00:00"}
    study.set_user_attr("driver", {**lease, "heartbeat": time.time()})
    with pytest.raises(UserError, match="being searched by process 4242 on gpu-node-7 since 2026-11-24T08:00:00"):
        submit(job, progress=False)
    study.set_user_attr("driver", {**lease, "heartbeat": time.time() - 120})  # that driver went silent
    summary = submit(job, progress=False)
    assert summary.finished == 2
    assert optuna.load_study(study_name=job.name, storage=job.optuna_storage).user_attrs["driver"] is None


def test_a_driver_killed_mid_trial_is_resumed_by_the_next_submit_with_nothing_lost_or_run_twice(
        tmp_path, tiny_bert, reviews_csv):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:sleeps", budget={"trials": 2, "parallel": 1})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--no-progress"]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, running = time.monotonic() + 240, []
    while not running and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(2)
        if job.layout.study_db.is_file():
            running = [t for t in trials_being_created(job.name, job.optuna_storage) or []
                       if t.state == optuna.trial.TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
    assert running
    driver.send_signal(signal.SIGKILL)  # no clean-up of any kind
    driver.wait(timeout=60)
    data = yaml.safe_load((tmp_path / "job.yaml").read_text())
    data["trainer"] = None  # the next submit trains for real
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 trials, 0 failed" in resumed.stdout

    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    killed = study.trials[running[0].number]
    assert killed.state == optuna.trial.TrialState.FAIL and killed.user_attrs["interrupted"]
    completed = StudyRecord(study).completed()
    assert completed[0].params == killed.params  # the interrupted plan ran again first
    keys = [tuple(sorted(t.params.items())) for t in completed]
    assert len(keys) == len(set(keys)) == 2
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    _, parents, children = runs_of(job)
    statuses = {c.data.tags["autopeft.trial"]: c.info.status for c in children}
    assert statuses == {str(killed.number): "KILLED", **{str(t.number): "FINISHED" for t in completed}}
    assert parents[0].info.status == "FINISHED"


def test_two_fresh_submits_at_once_run_one_search(tmp_path, tiny_bert, reviews_csv):
    import subprocess
    import sys

    tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 1})
    command = [sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--no-progress"]
    drivers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(d.wait(timeout=600), *d.communicate()) for d in drivers]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], [err[-2000:] for _, _, err in outcomes]
    refused = next(err for code, _, err in outcomes if code == 2)
    assert "is being searched by process" in refused and "Traceback" not in refused
    ran = next(out for code, out, _ in outcomes if code == 0)
    assert "2 trials, 0 failed" in ran
