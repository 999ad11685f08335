"""Credentials in store URIs never reach a record, a log, an export or the console."""

from __future__ import annotations

import os

import pytest

from autopeft.job.load import load_job
from autopeft.job.secrets import mask_uri
from autopeft.record.tracking import credentials_to_environment
from conftest import write_job


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://autopeft:s3cret@db.internal:5432/autopeft", "postgresql://***@db.internal:5432/autopeft"),
    ("postgresql+psycopg2://alice@db/x", "postgresql+psycopg2://***@db/x"),
    ("https://bob:p%40ss@mlflow.internal/", "https://***@mlflow.internal/"),
    ("mysql://db/x?user=app&password=s3cret&charset=utf8", "mysql://db/x?user=app&password=***&charset=utf8"),
    ("https://mlflow.internal/?access_token=abc&sig=def", "https://mlflow.internal/?access_token=***&sig=***"),
    ("sqlite:////runs/study.db", "sqlite:////runs/study.db"),
    ("ray://head:10001", "ray://head:10001"),
    (None, None),
])
def test_store_uris_are_shown_without_credentials(uri, shown):
    assert mask_uri(uri) == shown


def test_the_stored_job_masks_credentials_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPEFT_TEST_DB_PASSWORD", "s3cret")
    job = load_job(write_job(tmp_path, stores={"optuna_storage": "postgresql://alice:${AUTOPEFT_TEST_DB_PASSWORD}@db/x",
                                               "mlflow_uri": "https://bob:hunter2@mlflow.internal"}))
    assert job.optuna_storage == "postgresql://alice:s3cret@db/x"  # what the store is opened with
    public = job.public_dict()
    assert public["stores"] == {**public["stores"], "optuna_storage": "postgresql://***@db/x",
                                "mlflow_uri": "https://***@mlflow.internal"}
    assert "s3cret" not in repr(public) and "hunter2" not in repr(public)


def test_an_mlflow_server_gets_its_credentials_from_mlflows_variables_not_the_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert credentials_to_environment("https://bob:p%40ss@mlflow.internal:5000/") == "https://mlflow.internal:5000/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("bob", "p@ss")
    assert credentials_to_environment("sqlite:////runs/mlflow.db") == "sqlite:////runs/mlflow.db"



def test_the_local_ray_of_a_search_refuses_a_client_without_its_token(ray_local):
    import subprocess
    import sys

    address = ray_local.get_runtime_context().gcs_address
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print('connected')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}

    def connect(**auth):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env={**env, **auth})

    intruder = connect(RAY_AUTH_MODE="disabled")
    assert intruder.returncode != 0 and "connected" not in intruder.stdout
    holder = connect(RAY_AUTH_MODE="token")  # the token Ray keeps for this user (~/.ray/auth_token)
    assert holder.returncode == 0 and "connected" in holder.stdout, holder.stderr[-2000:]
