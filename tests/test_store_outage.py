"""A real MLflow server goes down for a minute in the middle of a search: the search goes on and
every record reaches MLflow once the server is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from conftest import free_port, trials_being_created
from test_search import tiny_job


def _api(port: int, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=10))


def _serve(store: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--default-artifact-root", (store / "artifacts").as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            _api(port, "experiments/search", {"max_results": 1})
            return server
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "the MLflow server did not come up"
            time.sleep(1)


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def test_a_search_goes_on_while_its_mlflow_server_is_down_and_writes_everything_when_it_is_back(
        tmp_path, tiny_bert, reviews_csv):
    store, port = tmp_path / "mlflow-server", free_port()
    store.mkdir()
    server = _serve(store, port)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, trainer="trainers:trains_slowly", budget={"trials": 4, "parallel": 1},
                   stores={"run_dir": "run", "mlflow_uri": f"http://127.0.0.1:{port}"})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    driver = subprocess.Popen([sys.executable, "-m", "autopeft", "submit", str(tmp_path / "job.yaml"), "--no-progress"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:  # the first trial finishes with MLflow up
            time.sleep(1)
            if job.layout.study_db.is_file():
                trials = trials_being_created(job.name, job.optuna_storage) or []
                if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
                    break
        _stop(server)
        time.sleep(30)  # trials go on finishing while MLflow is down
        server = _serve(store, port)
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    try:
        assert driver.returncode == 0, err[-3000:]
        assert "4 trials, 0 failed" in out
        assert "MLflow failed" in err and "the search goes on" in err and "MLflow is back" in err
        experiment = _api(port, f"experiments/get-by-name?experiment_name={job.name}")["experiment"]
        runs = _api(port, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
        kinds = {r["info"]["run_name"]: r["info"]["status"] for r in runs}
        assert len(runs) == 5 and kinds == {job.name: "FINISHED", **{f"trial-{n:03d}": "FINISHED" for n in range(4)}}, \
            (sorted((r["info"]["run_name"], r["info"]["status"]) for r in runs), err[-3000:])
        parent = next(r for r in runs if r["info"]["run_name"] == job.name)["info"]["run_id"]
        history = _api(port, f"metrics/get-history?run_id={parent}&metric_key=hypervolume")["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2, 3, 4]
    finally:
        _stop(server)


def _failing(monkeypatch, calls_to_fail):
    """The study database fails ``set_trial_state_values`` (a trial's result) for the given calls (1-based)."""
    import sqlalchemy.exc
    from optuna.storages import RDBStorage

    original, count = RDBStorage.set_trial_state_values, {"n": 0}

    def set_trial_state_values(self, *args, **kwargs):
        count["n"] += 1
        if calls_to_fail(count["n"]):
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("attempt to write a readonly database"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", set_trial_state_values)
    monkeypatch.setattr("autopeft.record.storage.RETRY_DELAYS", (0.1, 0.2, 0.4))


def test_a_study_database_that_fails_for_a_moment_is_retried(tmp_path, tiny_bert, reviews_csv, ray_local, monkeypatch):
    from autopeft.api import submit

    _failing(monkeypatch, lambda n: n in (1, 2))
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 1})
    summary = submit(job, progress=False)
    assert summary.finished == 2 and summary.failed == 0


def test_a_study_database_that_stays_down_stops_the_search_cleanly_and_it_resumes(
        tmp_path, tiny_bert, reviews_csv, ray_local, monkeypatch):
    import pytest

    from autopeft.api import submit
    from autopeft.record.storage import StoreUnavailable
    from autopeft.record.study import StudyRecord

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 3, "parallel": 1})
    _failing(monkeypatch, lambda n: n >= 2)  # the first trial is recorded, then the database is read-only
    with pytest.raises(StoreUnavailable, match="the study storage kept failing .*submit the job again to resume"):
        submit(job, progress=False)
    monkeypatch.undo()
    summary = submit(job, progress=False)
    assert summary.finished == 3
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    keys = [tuple(sorted(t.params.items())) for t in StudyRecord(study).completed()]
    assert len(keys) == len(set(keys)) == 3


def _open_when_released(url: str, barrier, results) -> None:
    from autopeft.record.storage import open_storage

    barrier.wait()
    try:
        open_storage(url)
        results.put("opened")
    except Exception as exc:  # noqa: BLE001 - the test reports what went wrong
        results.put(f"{type(exc).__name__}: {exc}"[:300])


def test_drivers_that_create_one_new_study_store_at_the_same_moment_all_open_it(tmp_path):
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'study-{attempt}.db'}"
        barrier, results = context.Barrier(6), context.Queue()
        drivers = [context.Process(target=_open_when_released, args=(url, barrier, results)) for _ in range(6)]
        for driver in drivers:
            driver.start()
        outcomes = [results.get(timeout=120) for _ in drivers]
        for driver in drivers:
            driver.join()
        assert outcomes == ["opened"] * 6, outcomes
        assert optuna.get_all_study_summaries(url) == []


def test_a_batch_of_trial_writes_lands_in_one_transaction_in_order_and_a_failed_commit_is_retried_whole(tmp_path, monkeypatch):
    import threading

    import sqlalchemy
    from optuna.distributions import IntDistribution
    from optuna.storages._rdb.models import TrialUserAttributeModel

    from autopeft.record.storage import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    space = {f"x{i}": IntDistribution(0, 8) for i in range(12)}
    commits = []

    def commit(connection):
        commits.append(connection)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", commit)
    try:
        study.ask(space)
        one_by_one, commits[:] = len(commits), []
        with storage.batched():
            trial = study.ask(space)
        assert one_by_one >= 12 and len(commits) <= one_by_one - 11  # the 12 parameters in one commit

        original, main, failed = sqlalchemy.orm.Session.commit, threading.current_thread(), []

        def fails_once(self):  # the first commit of this thread's batch of attributes fails, after its writes were sent
            if threading.current_thread() is main and not failed and any(isinstance(o, TrialUserAttributeModel) for o in self.new):
                self.flush()
                failed.append(1)
                raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("database is locked"))
            return original(self)

        monkeypatch.setattr(sqlalchemy.orm.Session, "commit", fails_once)
        monkeypatch.setattr("autopeft.record.storage.RETRY_DELAYS", (0.1, 0.2))
        with storage.batched():
            trial.set_user_attr("plan", {"query": 4})
            trial.set_user_attr("size", 12)
            elsewhere = threading.Thread(target=lambda: storage.set_trial_user_attr(trial._trial_id, "node", "n1"))
            elsewhere.start()
            elsewhere.join()  # another thread's write is not held back by this one's batch
            assert optuna.load_study(study_name=study.study_name, storage=url).trials[1].user_attrs == {"node": "n1"}
            assert storage.get_trial(trial._trial_id).user_attrs["size"] == 12  # held writes go first
            trial.set_user_attr("size", 13)
            study.tell(trial, [0.5, 10.0])  # after the attributes it follows
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", commit)
    assert failed, "the batch's commit did not fail"
    stored = optuna.load_study(study_name=study.study_name, storage=url).trials[1]
    assert stored.params == trial.params and len(stored.params) == 12
    assert stored.user_attrs == {"plan": {"query": 4}, "size": 13, "node": "n1"}
    assert stored.state == optuna.trial.TrialState.COMPLETE and stored.values == [0.5, 10.0]


def test_the_drivers_trials_kept_in_memory_are_the_trials_in_the_database(tmp_path):
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState

    from autopeft.record.storage import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(0))
    space = {f"x{i}": IntDistribution(0, 5) for i in range(6)}
    study.enqueue_trial({"x0": 1})
    for i in range(12):
        with storage.batched():
            trial = study.ask(space)
        with storage.batched():
            trial.set_user_attr("plan", {"n": i})
            trial.set_user_attr("size", i)
            trial.set_user_attr("size", i + 100)  # the same attribute twice in one transaction
        trial.set_user_attr("plan", {"n": -i})  # and again later, on its own
        storage.set_trial_intermediate_value(trial._trial_id, 1, 0.1 * i)
        if i == 9:  # a write that reached the database, but not the driver (a commit whose reply was lost), written again
            storage._inner._backend.set_trial_user_attr(trial._trial_id, "node", "n0")
            with storage.batched():
                trial.set_user_attr("node", "n1")
                trial.set_user_attr("seen", True)
        if i % 3 == 0:
            study.tell(trial, state=TrialState.FAIL)
        elif i % 3 == 1:
            study.tell(trial, [0.5 + 0.01 * i, float(i)])
        if i == 6:  # another writer adds a trial: the driver reads the study again when it next creates one
            optuna.load_study(study_name="s", storage=url).ask(space)

    def fields(trials):
        return [(t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs,
                 t.intermediate_values) for t in trials]

    stored = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert len(stored) == 13 and stored[0].params["x0"] == 1
    assert stored[1].user_attrs == {"plan": {"n": -1}, "size": 101}
    assert stored[10].user_attrs["node"] == "n1" and stored[10].user_attrs["seen"] is True
    assert fields(study.get_trials(deepcopy=False)) == fields(stored)
