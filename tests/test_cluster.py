"""A search on a real two-node Ray cluster, with Optuna on PostgreSQL and an MLflow tracking server
backed by PostgreSQL: every server on 127.0.0.1, every process stopped at the end."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY_FIDELITY, free_port, trials_being_created, write_job

BIN = Path(sys.executable).parent
TESTS = Path(__file__).parent


def wait_until(check, seconds: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"waited {seconds:.0f} s for {what}")


def stop_group(process: subprocess.Popen, grace: float = 20) -> None:
    """Stop a process started in its own session, and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    assert found, f"PostgreSQL's {name} is missing: apt-get install postgresql (.ci/run does)"
    return found


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with a password, in a temporary folder; yields its base URL."""
    root = Path(tempfile.mkdtemp(prefix="autopeft-pg-"))
    password = secrets.token_hex(12)
    (root / "pw").write_text(password)
    as_owner: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    subprocess.run([*as_owner, postgres_bin("initdb"), "-D", str(data), "-U", "autopeft", "-A", "scram-sha-256",
                    "--pwfile", str(root / "pw")], check=True, capture_output=True)
    subprocess.run([*as_owner, postgres_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
                    "-o", f"-h 127.0.0.1 -p {port} -k {root}"], check=True, capture_output=True)
    base = f"postgresql://autopeft:{password}@127.0.0.1:{port}"
    try:
        import psycopg

        with psycopg.connect(f"{base}/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE optuna")
            db.execute("CREATE DATABASE mlflow")
        yield base, password
    finally:
        subprocess.run([*as_owner, postgres_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on 127.0.0.1, its runs in PostgreSQL, its artifacts in a folder; yields its URL."""
    base, _ = postgres
    port = free_port()
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    log = open(artifacts.parent / "mlflow-server.log", "w")
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"{base}/mlflow",
                               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            assert server.poll() is None, (artifacts.parent / "mlflow-server.log").read_text()[-3000:]
            return False

    try:
        wait_until(healthy, 120, "the MLflow server")
        yield url
    finally:
        stop_group(server)
        log.close()


def ray_env(root: Path) -> dict[str, str]:
    """Token authentication with this cluster's own token, as every process that joins it needs."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "token"),
            "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}


def start_node(root: Path, *args: str) -> subprocess.Popen:
    """A Ray node with ports of its own: Ray's default agent ports are taken by any other Ray on this machine."""
    log = open(root / f"node-{len(list(root.glob('node-*.log')))}.log", "w")
    ports = [arg for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                              "--metrics-export-port", "--node-manager-port", "--object-manager-port")
             for arg in (flag, str(free_port()))]
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", *ports, *args],
                            env=ray_env(root), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def ray_nodes(root: Path, dashboard: str) -> list[dict]:
    listed = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", dashboard, "--format", "json"],
                            env=ray_env(root), capture_output=True, text=True)
    return json.loads(listed.stdout) if listed.stdout.startswith("[") else []  # none yet: "No resource in the cluster"


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head (2 CPUs) and a second node (2 CPUs) on this machine; yields what the test needs to use them."""
    root = Path(tempfile.mkdtemp(prefix="ar-"))  # short: Ray's socket paths live under it
    (root / "token").write_text(secrets.token_hex(32))
    gcs, client, dashboard = free_port(), free_port(), free_port()
    head = start_node(root, "--head", "--port", str(gcs), "--num-cpus", "2", "--ray-client-server-port", str(client),
                      "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--temp-dir", str(root / "ray"))
    nodes = [head]
    try:
        dashboard_url = f"http://127.0.0.1:{dashboard}"
        wait_until(lambda: len(ray_nodes(root, dashboard_url)) == 1, 120, "the Ray head", every=2)
        second = start_node(root, "--address", f"127.0.0.1:{gcs}", "--num-cpus", "2")
        nodes.append(second)
        listed = wait_until(lambda: [n for n in ray_nodes(root, dashboard_url) if n["state"] == "ALIVE"]
                            if len(ray_nodes(root, dashboard_url)) == 2 else None, 120, "the second Ray node", every=2)
        yield {"root": root, "client": f"ray://127.0.0.1:{client}", "dashboard": dashboard_url, "second": second,
               "head_id": next(n["node_id"] for n in listed if n["is_head_node"]),
               "second_id": next(n["node_id"] for n in listed if not n["is_head_node"])}
    finally:
        for node in reversed(nodes):
            stop_group(node)
        shutil.rmtree(root, ignore_errors=True)


def cluster_job(tmp_path: Path, tiny_bert, reviews_csv, postgres, mlflow_server, trials: int, **overrides) -> Path:
    base, _ = postgres
    fields = dict(model=tiny_bert,
                  task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment",
                        "validation_size": 100},
                  fidelity=TINY_FIDELITY, budget={"trials": trials, "parallel": 2}, resources={"cpus": 1},
                  optimizer={"sampler": "random"},
                  stores={"optuna_storage": f"{base}/optuna", "mlflow_uri": mlflow_server, "run_dir": str(tmp_path / "run")})
    return write_job(tmp_path, **{**fields, **overrides})


def autopeft(root: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**ray_env(root), "PYTHONPATH": str(TESTS)}  # the custom trainer's module; Ray ships it to the nodes
    return subprocess.Popen([str(BIN / "autopeft"), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def test_a_search_spreads_over_two_nodes_and_survives_losing_one(tmp_path, tiny_bert, reviews_csv, postgres,
                                                                   mlflow_server, ray_cluster):
    name = "two-nodes"
    job_file = cluster_job(tmp_path, tiny_bert, reviews_csv, postgres, mlflow_server, trials=8, name=name,
                           trainer="trainers:trains_slowly")
    storage = f"{postgres[0]}/optuna"
    driver = autopeft(ray_cluster["root"], "submit", str(job_file), "--address", ray_cluster["client"], "--no-progress")
    second = ray_cluster["second_id"][:8]

    def on_second_node(state):
        trials = trials_being_created(name, storage) or []
        assert driver.poll() is None, driver.stdout.read()[-4000:]
        return [t for t in trials if t.state == state and second in t.user_attrs.get("node", "")]

    wait_until(lambda: on_second_node(optuna.trial.TrialState.COMPLETE), 400, "a trial to finish on the second node", every=1)
    lost = wait_until(lambda: on_second_node(optuna.trial.TrialState.RUNNING), 120, "a trial running on the second node",
                      every=0.5)[0]
    stop_group(ray_cluster["second"], grace=0)  # the node goes away with its trial
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-4000:]
    assert "lost its worker; running it again" in out

    study = optuna.load_study(study_name=name, storage=storage)
    trained = [t for t in study.trials if "skipped" not in t.user_attrs]  # not a plan the random sampler repeated
    assert [t.state for t in trained] == [optuna.trial.TrialState.COMPLETE] * 8  # nothing lost or counted twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    nodes = {t.user_attrs["node"].split("ray node ")[1].rstrip(")") for t in trained}
    assert nodes == {ray_cluster["head_id"][:8], second}  # spread over both nodes
    assert {t.user_attrs["metrics"]["niceness"] for t in trained} == {os.nice(0)}  # at the nodes' priority, not Ray's 15
    retried = study.trials[lost.number]
    assert ray_cluster["head_id"][:8] in retried.user_attrs["node"]  # the lost trial ran again on the head

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("autopeft.kind") == "trial"]
    assert sorted(int(r.data.tags["autopeft.trial"]) for r in trials) == [t.number for t in trained]
    assert all(r.info.status == "FINISHED" for r in trials)
    password = postgres[1]
    for run in runs:  # the store's password is in no param, tag or artifact
        assert password not in json.dumps([run.data.params, run.data.tags])
        logged = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "logged" / run.info.run_id)))
        texts = [path.read_text() for path in logged.rglob("*") if path.suffix in (".yaml", ".json", ".html")]
        if run.data.tags["autopeft.kind"] == "search":
            assert any(path.name == "job.yaml" for path in logged.rglob("*"))
        assert not [text for text in texts if password in text]
    assert password not in out

    shutil.rmtree(tmp_path / "run")  # export on a machine that has only the shared stores
    exporter = autopeft(ray_cluster["root"], "export", str(job_file), "--pick", "best", "--out", str(tmp_path / "adapter"))
    out, _ = exporter.communicate(timeout=300)
    assert exporter.returncode == 0, out[-3000:]
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(tmp_path / "adapter")).peft_type
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    point = json.loads((tmp_path / "adapter" / "autopeft_point.json").read_text())
    assert password not in json.dumps(point)


def test_ray_job_submit_runs_a_search_on_the_cluster(tmp_path, tiny_bert, reviews_csv, postgres, mlflow_server,
                                                     ray_cluster):
    work = tmp_path / "project"
    work.mkdir()
    cluster_job(work, tiny_bert, reviews_csv, postgres, mlflow_server, trials=2, name="ray-job",
                budget={"trials": 2, "parallel": 1})
    deadline = time.monotonic() + 180
    while True:  # the head node's job agent may still be starting
        job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", ray_cluster["dashboard"], "--working-dir",
                              str(work), "--", "autopeft", "submit", "job.yaml", "--no-progress"],
                             env=ray_env(ray_cluster["root"]), capture_output=True, text=True, timeout=600)
        if "No available agent" not in job.stderr or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
    assert "Pareto front" in job.stdout
    study = optuna.load_study(study_name="ray-job", storage=f"{postgres[0]}/optuna")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    cluster_nodes = (ray_cluster["head_id"][:8], ray_cluster["second_id"][:8])  # not a Ray the driver started itself
    assert all(any(node in t.user_attrs["node"] for node in cluster_nodes) for t in study.trials)
    assert postgres[1] not in job.stdout + job.stderr

    # a script that follows the search through the API, 150 reads of the shared store, keeps no connection
    # open after each (with the garbage collector off, as in a busy process where it seldom runs)
    import gc

    import psycopg

    from autopeft.api import count_scored, read_front

    def connections() -> int:
        with psycopg.connect(f"{postgres[0]}/postgres") as db:
            return db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'optuna'").fetchone()[0]

    before = connections()  # the test's own study's, above
    gc.disable()
    try:
        for _ in range(75):
            read_front(work / "job.yaml")
            scored = count_scored(work / "job.yaml")
    finally:
        gc.enable()
    assert scored == 2 and connections() == before


SESSION_FAILED = ("Initialization failure from server:\nTraceback (most recent call last):\n  File \"proxier.py\", line 766\n"
                  "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for detailed logs.\n")


def flaky_head(monkeypatch, failures: int) -> list[dict]:
    """A Ray client head that answers, then fails to start the client's session ``failures`` times."""
    import ray

    from autopeft.run import pool

    calls: list[dict] = []

    def init(**kwargs):
        calls.append(kwargs)
        if len(calls) <= failures:
            raise ConnectionAbortedError(SESSION_FAILED)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(pool, "CLUSTER_SESSION_RETRIES", (0.0, 0.0, 0.0))
    return calls


def test_a_head_that_fails_to_start_the_session_at_first_is_tried_again(monkeypatch, capsys):
    from autopeft.job.load import parse_job
    from autopeft.run.pool import init_ray

    calls = flaky_head(monkeypatch, failures=2)
    init_ray(parse_job({"name": "t", "model": "minilm-l6", "task": {"dataset": "rotten_tomatoes"},
                        "stores": {"ray_address": "ray://head:10001"}}))
    assert len(calls) == 3 and {c["address"] for c in calls} == {"ray://head:10001"}
    assert len({c["runtime_env"]["py_modules"][0] for c in calls}) == 1  # the package is staged once
    err = capsys.readouterr().err
    assert err.count("trying again") == 2 and "Starting Ray client server failed" in err


def test_a_head_that_never_starts_the_session_is_one_clear_message(monkeypatch):
    from autopeft.errors import UserError
    from autopeft.job.load import parse_job
    from autopeft.run.pool import init_ray

    calls = flaky_head(monkeypatch, failures=99)
    with pytest.raises(UserError) as raised:
        init_ray(parse_job({"name": "t", "model": "minilm-l6", "task": {"dataset": "rotten_tomatoes"},
                            "stores": {"ray_address": "ray://head:10001"}}))
    assert len(calls) == 4
    message = str(raised.value)
    assert "stores.ray_address" in message and "could not start a session" in message
    assert "Starting Ray client server failed" in message and "ray job submit" in message
