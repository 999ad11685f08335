"""A real MLflow server goes down for a minute in the middle of a search: the search goes on and
every record reaches MLflow once the server is back."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from test_search import tiny_job


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    store, port = tmp_path / "mlflow-server", _free_port()
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
                try:
                    trials = optuna.load_study(study_name=job.name, storage=job.optuna_storage).trials
                except KeyError:
                    continue
                if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
                    break
        _stop(server)
        time.sleep(60)  # trials go on finishing while MLflow is down
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
        assert kinds == {job.name: "FINISHED", **{f"trial-{n:03d}": "FINISHED" for n in range(4)}}
        parent = next(r for r in runs if r["info"]["run_name"] == job.name)["info"]["run_id"]
        history = _api(port, f"metrics/get-history?run_id={parent}&metric_key=hypervolume")["metrics"]
        assert sorted(m["step"] for m in history) == [1, 2, 3, 4]
    finally:
        _stop(server)
