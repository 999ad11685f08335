"""The MLflow writer behind a search: records naming a run that MLflow has not created yet, or does not have."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from autopeft.record.pareto import Point
from autopeft.record.tracking import MlflowWriter, Tracker, lasting


def _slow_to_create_runs(monkeypatch, seconds: float) -> None:
    original = MlflowWriter.start_trial

    def start_trial(self, *args, **kwargs):
        time.sleep(seconds)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowWriter, "start_trial", start_trial)


def test_a_record_that_names_a_run_mlflow_has_not_created_yet_lands_on_that_run(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "slow-store", tmp_path / "artifacts")
    parent = tracker.start_search("slow-store", {"model": "m"}, {}, None)
    _slow_to_create_runs(monkeypatch, 1.0)
    first, second = tracker.start_trial(0, {"rank": 4}), tracker.start_trial(1, {"rank": 8})
    assert lasting(first) is None and tracker.run_id(first) == first  # handed out before the run exists
    # the re-evaluated front names its points' runs by the ids handed out, as keys of a mapping
    point = Point(trial=0, quality=0.75, params=100, pct=0.1, std=0.02, seeds=3)
    tracker.log_final_front([point], 0.5, {}, {first: point})
    assert lasting(settled := tracker.settle(second)) == settled  # waits for a working MLflow to create it
    tracker.finish_search()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id(first))
    assert run.data.tags["autopeft.trial"] == "0"
    assert run.data.metrics["final_quality_mean"] == 0.75 and run.data.metrics["final_seeds"] == 3
    assert client.get_run(settled).data.tags["autopeft.trial"] == "1"
    finished = client.get_run(parent)
    assert finished.data.metrics["final_hypervolume"] == 0.5 and finished.info.status == "FINISHED"


def test_a_record_naming_a_run_mlflow_does_not_have_is_dropped_and_the_rest_is_written(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "lost-run", tmp_path / "artifacts")
    parent = tracker.start_search("lost-run", {}, {}, None)
    started = time.monotonic()
    tracker.finish_trial("0123456789abcdef", {"quality": 0.5}, None)  # a run removed from the store
    trial = tracker.start_trial(0, {})
    tracker.finish_trial(trial, {"quality": 0.6}, None)
    tracker.finish_search()
    assert time.monotonic() - started < 30 and tracker.backlog == 0  # not mistaken for MLflow being down
    assert "could not be written" in caplog.text and "MLflow failed" not in caplog.text

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(tracker.run_id(trial)).data.metrics["quality"] == 0.6
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_run_whose_creation_mlflow_failed_part_way_is_not_created_twice(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "part-way", tmp_path / "artifacts")
    tracker.start_search("part-way", {}, {}, None)
    original, calls = MlflowWriter._log_params, []

    def fails_once(self, run_id, params):  # MLflow goes down between creating a trial's run and logging its params
        calls.append(run_id)
        if len(calls) == 1:
            raise OSError("connection refused")
        return original(self, run_id, params)

    monkeypatch.setattr(MlflowWriter, "_log_params", fails_once)
    trial = tracker.start_trial(0, {"rank": 4})
    tracker.flush()
    assert tracker.backlog == 1  # kept: MLflow failed
    tracker.finish_trial(trial, {"quality": 0.7}, None)  # written once MLflow answers, after the kept start
    tracker.finish_search()
    assert tracker.backlog == 0

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("part-way")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "trial-000"]
    assert len(runs) == 1 and runs[0].info.run_id == tracker.run_id(trial) == calls[0]
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["rank"] == "4" and runs[0].data.metrics["quality"] == 0.7


def test_a_store_deleted_and_made_again_in_one_python_session_gets_every_record(tmp_path, caplog):
    """A run directory removed between two searches of one Python session (a notebook): MLflow keeps its connections
    to the SQLite file of the first for the life of the process; the second search must write to the new file."""
    import shutil

    store = tmp_path / "run"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    first = Tracker(uri, "again", store / "artifacts")
    first.start_search("again", {}, {}, None)
    first.finish_search()
    shutil.rmtree(store)
    store.mkdir()
    started = time.monotonic()
    second = Tracker(uri, "again", store / "artifacts")
    parent = second.start_search("again", {"model": "m"}, {}, None)
    trial = second.start_trial(0, {"rank": 4})
    second.finish_trial(trial, {"quality": 0.6}, None)
    second.finish_search()
    assert time.monotonic() - started < 30 and second.backlog == 0, caplog.text[-2000:]
    assert "MLflow failed" not in caplog.text

    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(second.run_id(trial)).data.metrics["quality"] == 0.6
    assert client.get_run(second.run_id(parent)).info.status == "FINISHED"
    assert [r.info.run_id for r in client.search_runs([client.get_experiment_by_name("again").experiment_id])] != []
