"""The CLI end to end on the real MiniLM-L6 and real Rotten Tomatoes data: submit, pareto, export, reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration


def autopeft(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "autopeft", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_submit_pareto_export_and_reload_with_peft(tmp_path):
    job = {
        "name": "e2e",
        "model": "minilm-l6",
        "task": {"dataset": "rotten_tomatoes", "metric": "accuracy"},
        "search_space": "lora",
        "budget": {"trials": 4, "parallel": 2},
        "optimizer": {"sampler": "gp", "n_startup_trials": 3},
        "fidelity": {"train_examples": 256, "eval_examples": 200, "batch_size": 32, "max_seq_length": 48,
                     "learning_rate": 0.005},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))

    run = autopeft("submit", "job.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trials: 100%" in run.stderr and "pareto=" in run.stderr
    assert "Pareto front (" in run.stdout and "autopeft ui job.yaml" in run.stdout
    assert (tmp_path / "autopeft_runs" / "e2e" / "study.db").is_file()
    assert (tmp_path / "autopeft_runs" / "e2e" / "mlflow.db").is_file()

    listed = autopeft("pareto", "job.yaml", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr[-3000:]
    front = json.loads(listed.stdout)["front"]
    assert front and all(0.0 <= p["quality"] <= 1.0 for p in front)
    # the learning rate is searched by default, around the job's 0.005, and each point shows its own
    assert all(p["plan"].rsplit(" lr ", 1)[1] in {"0.00167", "0.005", "0.015"} for p in front), front

    out = tmp_path / "adapter"
    exported = autopeft("export", "job.yaml", "--pick", "best", "--out", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    info = json.loads((out / "autopeft_point.json").read_text())
    assert info["quality"] == max(p["quality"] for p in front)

    _reload_and_score(out, info, job)


def _reload_and_score(out: Path, info: dict, job: dict):
    import torch
    from peft import PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.models import resolve_model

    path = resolve_model("minilm-l6")
    config = PeftConfig.from_pretrained(str(out))
    wrapped = get_peft_model(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), config)
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == info["trainable_params"]

    torch.manual_seed(1)
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), str(out))
    model.eval()
    data = load_task_data(TaskSpec(**job["task"]))
    n = job["fidelity"]["eval_examples"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [t[0] for t in data.validation_texts[:n]]
    batch = tokenizer(texts, truncation=True, max_length=job["fidelity"]["max_seq_length"], padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = model(**batch).logits.argmax(-1).tolist()
    accuracy = sum(int(p == y) for p, y in zip(predictions, data.validation_labels[:n])) / n
    assert accuracy == pytest.approx(info["quality"], abs=1.5 / n)


def test_the_demo_command_runs_a_real_search(tmp_path):
    run = autopeft("demo", "--trials", "1", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "autopeft: search 'demo': 1 trials" in run.stdout and "Pareto front (1 points, 1 trials, 0 failed" in run.stdout
    assert (tmp_path / "autopeft_runs" / "demo" / "study.db").is_file()
