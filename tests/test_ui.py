"""`autopeft ui` serves the search's MLflow store on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import free_port


def _command_lines() -> list[str]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            lines.append(open(f"/proc/{pid}/cmdline").read())
        except OSError:
            pass
    return lines


def start_ui(job, tmp_path) -> tuple[subprocess.Popen, int]:
    """``autopeft ui`` on ``job`` (written to a job file), in a session of its own: (the process, its port)."""
    port = free_port()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(json.dumps(job.model_dump(mode="json")))
    process = subprocess.Popen([sys.executable, "-m", "autopeft", "ui", str(job_file), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    return process, port


def test_ui_serves_the_parent_run_and_its_trials(searched, tmp_path):
    process, port = start_ui(searched, tmp_path)
    try:
        first_line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in first_line
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name={searched.name}"
        deadline = time.time() + 90
        while True:
            try:
                experiment = json.load(urllib.request.urlopen(url, timeout=5))["experiment"]
                break
            except OSError:
                assert time.time() < deadline, "the MLflow UI did not come up"
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment["experiment_id"]], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
        kinds = [next(t["value"] for t in r["data"]["tags"] if t["key"] == "autopeft.kind") for r in runs]
        assert kinds.count("search") == 1 and kinds.count("trial") == 5
        assert first_line.split()[5] == f"http://127.0.0.1:{port}/#/experiments/{experiment['experiment_id']}/runs?viewStateShareKey=autopeft&workflowType=machine_learning"
        server = [c for c in _command_lines() if f"--port\0{port}" in c and "-m\0autopeft" not in c]  # one web worker, no job runner
        assert any("uvicorn" in c or "gunicorn" in c for c in server) and all("--workers\x001" in c for c in server)
        assert not [c for c in _command_lines() if "huey" in c and str(searched.layout.mlflow_db) in c]
        process.send_signal(signal.SIGTERM)  # autopeft's own process only: the server it started stops with it
        assert process.wait(timeout=60) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the MLflow server outlived 'autopeft ui'"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
