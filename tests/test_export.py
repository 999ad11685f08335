"""Export: a peft adapter folder that peft loads, with the count and the quality the search recorded."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
import torch
import yaml

from autopeft.api import export, read_front
from autopeft.errors import UserError


def _validation_accuracy(model, job, tiny_bert, labels=None):
    """The model's accuracy on the job's validation examples; with ``labels`` (the exported class names), its
    predictions read as class names and compared with each example's label as the data file spells it."""
    from transformers import AutoTokenizer

    from autopeft.job.data import load_task_data

    data = load_task_data(job.task)
    n = min(job.fidelity.eval_examples, len(data.validation_labels))
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = [t[0] for t in data.validation_texts[:n]]
    batch = tokenizer(texts, truncation=True, max_length=job.fidelity.max_seq_length, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        predictions = model(**batch).logits.argmax(-1).tolist()
    if labels is None:
        return sum(int(p == y) for p, y in zip(predictions, data.validation_labels[:n])) / n
    by_text = dict(zip(*(pd.read_csv(job.task.train_file)[c].astype(str) for c in (job.task.text_columns[0], job.task.label_column))))
    return sum(labels[p] == by_text[t] for p, t in zip(predictions, texts)) / n


@pytest.mark.parametrize("how", ["best", "knee"])
def test_export_reloads_with_peft_alone(searched, tiny_bert, tmp_path, how):
    from peft import PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForSequenceClassification

    exported = export(searched, how, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "adapter_config.json", "adapter_model.safetensors", "autopeft_point.json"}
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    assert info["trial"] == exported.point.trial and info["job"] == "t" and info["pick"] == how
    assert info["mlflow_run_id"]
    labels = info["labels"]  # the classes in the order of the head's outputs, as the data file spells them
    assert sorted(labels) == sorted(set(pd.read_csv(searched.task.train_file)[searched.task.label_column].astype(str)))

    config = PeftConfig.from_pretrained(str(tmp_path / "out"))
    assert config.peft_type.value == "LORA"

    def base():
        return AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=len(labels), ignore_mismatched_sizes=True)

    wrapped = get_peft_model(base(), config)
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == info["trainable_params"]

    loaded = PeftModel.from_pretrained(base(), str(tmp_path / "out"))
    accuracy = _validation_accuracy(loaded, searched, tiny_bert, labels)
    assert accuracy == pytest.approx(info["quality"], abs=1.5 / searched.fidelity.eval_examples)


def test_smallest_above_picks_the_cheapest_point_that_reaches_the_quality(searched, tmp_path):
    front, _ = read_front(searched)
    target = sorted(p.quality for p in front)[len(front) // 2]
    exported = export(searched, f"smallest-above={target}", tmp_path / "out")
    assert exported.point.quality >= target
    assert all(p.params >= exported.point.params for p in front if p.quality >= target)


def test_any_finished_trial_is_exported_by_its_number_with_the_quality_it_recorded(searched, tmp_path):
    from autopeft.record.study import StudyRecord

    front, _ = read_front(searched)
    finished = StudyRecord.load(searched).finished_points()
    chosen = next((p for p in finished if p.trial not in {f.trial for f in front}), finished[0])
    exported = export(searched, f"trial={chosen.trial}", tmp_path / "out")
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    assert exported.point.trial == info["trial"] == chosen.trial
    assert info["quality"] == chosen.quality and info["trainable_params"] == chosen.params
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    with pytest.raises(UserError, match="trial 999 has no finished result"):
        export(searched, "trial=999", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_export_refuses_unreachable_quality_and_non_empty_folders(searched, tmp_path):
    with pytest.raises(UserError, match="no point reaches quality 1.5"):
        export(searched, "smallest-above=1.5", tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists and is not empty"):
        export(searched, "best", tmp_path / "b")
    assert not (tmp_path / "a").exists()


def test_the_front_has_only_completed_non_dominated_trials(searched):
    front, reference = read_front(searched)
    study = optuna.load_study(study_name=searched.name, storage=searched.optuna_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs]
    for p in front:
        assert not any(t.values[0] > p.quality and t.values[1] <= p.params for t in complete)
    assert reference.params > max(p.params for p in front)
    above = [t for t in complete if t.values[0] > reference.quality]  # a trial at the floor learned nothing
    assert {p.trial for p in front} == {t.number for t in above if not any(
        u.values[0] >= t.values[0] and u.values[1] <= t.values[1] and u.values != t.values for u in above)}


@pytest.fixture(scope="module")
def searched_mixed(tmp_path_factory, tiny_bert, reviews_csv, ray_local):
    from autopeft.api import submit
    from autopeft.job.load import load_job
    from conftest import TINY_FIDELITY, write_job

    directory = tmp_path_factory.mktemp("mixed-search")
    (directory / "combined.yaml").write_text(yaml.safe_dump({  # every point combines LoRA, IA3 and an adapter
        "name": "combined", "layers": "per_layer",
        "modules": {"lora": {"groups": {"query": [4]}}, "ia3": {"groups": ["ffn_out"], "optional": False},
                    "serial": {"sizes": [2, 4]}, "prefix": {"sizes": [0, 3]}}}))
    job = load_job(write_job(
        directory, model=tiny_bert, search_space="combined.yaml",
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        fidelity=TINY_FIDELITY, budget={"trials": 4, "parallel": 2}, optimizer={"sampler": "random", "n_startup_trials": 4},
    ))
    submit(job, progress=False)
    return job


def test_a_combined_plan_exports_and_reloads_with_the_recorded_quality(searched_mixed, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    import autopeft

    exported = export(searched_mixed, "best", tmp_path / "out")
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    assert {"lora", "ia3", "serial"} <= set(exported.plan.methods)
    assert (tmp_path / "out" / "autopeft_adapter.json").is_file()
    assert info["load_with"].startswith("autopeft.load_adapter")
    assert info["mergeable"]["lora"] and info["mergeable"]["ia3"] and not info["mergeable"]["serial"]
    merged, kept = info["merge_note"].split("; ")
    assert merged == "lora, ia3 merge into the base weights" and "serial" in kept and kept.endswith("stay as extra modules at inference")

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, ignore_mismatched_sizes=True)
    model = autopeft.load_adapter(base, tmp_path / "out")
    accuracy = _validation_accuracy(model, searched_mixed, tiny_bert)
    assert accuracy == pytest.approx(info["quality"], abs=1.5 / searched_mixed.fidelity.eval_examples)
    assert len(info["labels"]) == 2
    assert model.config.id2label == dict(enumerate(info["labels"]))  # the outputs carry the search's class names
    assert model.config.label2id == {name: i for i, name in enumerate(info["labels"])}

    named = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=2, id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1}, ignore_mismatched_sizes=True)
    assert autopeft.load_adapter(named, tmp_path / "out").config.id2label == {0: "no", 1: "yes"}  # the user's names stay


def test_a_search_recorded_by_autopeft_0_1_is_read_and_exported(tmp_path, tiny_bert, reviews_csv):
    """A study as autopeft 0.1 stored it: the same keys, plans in 0.1's flat form, no saved weights."""
    from peft import PeftConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from autopeft.job.load import load_job
    from autopeft.workers.build import count_trainable
    from autopeft.workers.methods.lora import Lora, LoraTarget
    from autopeft.workers.models import model_shape
    from autopeft.workers.plan import Plan
    from conftest import TINY_FIDELITY, write_job

    job = load_job(write_job(tmp_path, model=tiny_bert, fidelity=TINY_FIDELITY, task={
        "train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment"}))
    job.run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name=job.name, storage=job.optuna_storage, directions=["maximize", "minimize"])
    for key, value in (("reference", {"quality": 0.5, "params": 100_000}), ("num_labels", 2),
                       ("label_names", ["fresh", "rotten"]), ("job", job.model_dump(mode="json"))):
        study.set_user_attr(key, value)
    flat = {"lora": [{"group": "query", "rank": 4, "alpha": 8.0, "layers": [0, 1]},
                     {"group": "value", "rank": 0, "alpha": 0.0, "layers": []}],
            "ia3_groups": [], "ia3_layers": [], "serial_ffn": [], "serial_attention": [], "parallel_ffn": [],
            "parallel_scaling": 4.0, "prefix": [], "full": False, "learning_rate": None}
    plan = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0, 1)),)))
    params = count_trainable(plan, model_shape(tiny_bert, 2))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[0.7, params], user_attrs={
        "plan": flat, "plan_summary": "query:r4 @ layers 0,1", "trainable_pct": 1.0, "mlflow_run_id": "r0"}))

    front, reference = read_front(job)
    assert [(p.trial, p.params, p.plan) for p in front] == [(0, params, "query:r4 @ layers 0,1")]
    assert reference.params == 100_000
    exported = export(job, "best", tmp_path / "out")
    assert exported.plan == plan and not exported.with_weights
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2, ignore_mismatched_sizes=True)
    wrapped = get_peft_model(base, PeftConfig.from_pretrained(str(tmp_path / "out")))
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == params
