"""One trial in-process: the worker's contract without Ray."""

import json

import pytest

from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.workers.build import count_trainable
from autopeft.workers.methods.lora import Lora, LoraTarget
from autopeft.workers.models import load_base, model_shape
from autopeft.workers.plan import Plan
from autopeft.workers.trial import run_trial
from autopeft.workers.types import Fidelity, TrialRequest


def test_trial_reports_quality_exact_cost_and_the_adapter(tiny_bert, reviews_csv):
    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))
    plan = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0, 1)), LoraTarget("ffn_out", 2, 4.0, (1,)))))
    fidelity = Fidelity(train_examples=48, eval_examples=40, batch_size=16, max_seq_length=32)
    result = run_trial(TrialRequest(7, plan, tiny_bert, 2, "mcc", fidelity, seed=0), data)
    shape = model_shape(tiny_bert, 2)
    assert count_trainable(plan, shape) == 4 * 64 * 2 + 2 * 96 + 66  # and the worker checked peft trains as many
    assert -1.0 <= result.quality <= 1.0 and result.metrics["mcc"] == result.quality
    assert result.metrics["train_steps"] == 3
    assert result.device == "cpu" and result.peak_memory_mb > 0 and result.train_seconds > 0
    config = json.loads(result.adapter_files["adapter_config.json"])
    assert config["peft_type"] == "LORA" and config["rank_pattern"]
    assert len(result.adapter_files["adapter_model.safetensors"]) > 0


def test_same_request_gives_the_same_quality(tiny_bert, reviews_csv):
    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))
    plan = Plan.of(Lora((LoraTarget("value", 4, 8.0, (0,)),)))
    fidelity = Fidelity(train_examples=32, eval_examples=64, batch_size=16, max_seq_length=32)
    request = TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=3)
    assert run_trial(request, data).quality == run_trial(request, data).quality


def test_a_trial_function_that_never_touches_the_model_gets_no_copy_of_it(tiny_bert, reviews_csv, monkeypatch):
    from autopeft.workers import trial

    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))
    plan = Plan.of(Lora((LoraTarget("value", 4, 8.0, (0,)),)))
    request = TrialRequest(0, plan, tiny_bert, 2, "accuracy", Fidelity(train_examples=32, eval_examples=32), seed=3)
    loads = []
    load_base = trial.load_base
    monkeypatch.setattr(trial, "load_base", lambda *args: loads.append(args) or load_base(*args))
    result = run_trial(request, data, lambda context: {"accuracy": 0.5, "ranks": len(context.plan.methods)})
    assert result.quality == 0.5 and not result.adapter_files and loads == []
    result = run_trial(request, data, lambda context: {"accuracy": float(context.model.config.num_labels)})
    assert result.quality == 2.0 and len(loads) == 1


def test_a_loaded_model_never_fetches_kernels_from_the_hub(tiny_bert):
    # transformers' default on a GPU: every load and every switch between train and eval fetches kernel code
    # from the Hugging Face Hub, and with no network each trial fails
    _, model = load_base(tiny_bert, 2)
    assert model.use_kernels is False
    model.train()
    model.eval()
    assert model.use_kernels is False and model.kernels_mode is None


def test_a_checkpoint_fine_tuned_for_regression_trains_as_a_classifier(tmp_path):
    """A cross-encoder fine-tuned on similarity scores keeps ``problem_type: regression`` in its config, which
    would train the new head with a squared error on the class indices; it trains with cross-entropy instead."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from autopeft.workers.models import resolve_model

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        num_labels=1, problem_type="regression")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve_model("minilm-l6")).save_pretrained(tmp_path)
    _, model = load_base(str(tmp_path), 3)
    inputs, labels = torch.randint(1000, 2000, (4, 6)), torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        out = model(input_ids=inputs, labels=labels)
    assert out.logits.shape == (4, 3)
    assert float(out.loss) == float(torch.nn.functional.cross_entropy(out.logits, labels))


def test_a_hugging_face_id_in_the_local_hub_cache_loads_without_asking_the_network(tmp_path, monkeypatch):
    """The real MiniLM-L6 placed in a hub cache as ``huggingface_hub`` lays one out; every connection refused
    and recorded. Given the id, transformers would ask the hub for each file first and, with no network,
    wait out each call's timeout."""
    import shutil
    import socket

    import huggingface_hub.constants

    from autopeft.workers import models
    from autopeft.workers.models import ModelNotFound, pretrained, resolve_model

    repo = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repo / "snapshots" / "0123abcd"
    shutil.copytree(resolve_model("minilm-l6"), snapshot, ignore=shutil.ignore_patterns("1_Pooling"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    asked = []

    def refuse(sock, address):
        asked.append(address)
        raise OSError("no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model_id = "sentence-transformers/all-MiniLM-L6-v2"
    assert pretrained(model_id) == (str(snapshot), {})
    assert model_shape(model_id, 2).base_params == model_shape("minilm-l6", 2).base_params
    tokenizer, model = load_base(model_id, 2)
    assert model.config.num_labels == 2 and tokenizer("a review")["input_ids"]
    assert asked == []
    absent = "sentence-transformers/not-in-the-cache"
    with pytest.raises(ModelNotFound, match=f"'{absent}' is neither a model folder nor .* HF_HUB_OFFLINE is set"):
        pretrained(absent)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotFound, match="the hub cannot be reached to download it: huggingface.co:443 does not answer"):
        pretrained(absent)  # one connection tried, not the hub client's retries
    monkeypatch.setattr(models, "hub_unreachable", lambda: None)  # where the hub answers, transformers downloads it
    assert pretrained(absent) == (absent, {})


def test_a_bf16_base_trains_its_plan_in_fp32_to_the_quality_of_an_fp32_base_and_its_adapter_loads_on_either(
        tmp_path, monkeypatch):
    """``fidelity.base_dtype: bfloat16`` on the real MiniLM-L6 and Rotten Tomatoes, as the demo trains: the frozen
    linear layers are bf16, the embeddings, norms and what trains fp32, and the trial reaches the fp32 base's
    quality; the adapter it saves is fp32 and scores its recorded quality on a base loaded either way."""
    import torch

    from autopeft.workers import trial
    from autopeft.workers.build import load_adapter
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.train import evaluate

    data = load_task_data(TaskSpec(dataset="rotten_tomatoes"))
    plan = baseline_plan("lora-r8", model_shape("minilm-l6", data.num_labels))
    contexts, results, made = {}, {}, trial.TrialContext

    def kept(**kwargs):  # the trial's context, to look at the model it trained
        context = contexts[kwargs["fidelity"].base_dtype] = made(**kwargs)
        return context

    monkeypatch.setattr(trial, "TrialContext", kept)
    for dtype in ("float32", "bfloat16"):
        fidelity = Fidelity(train_examples=2000, eval_examples=500, max_seq_length=64, learning_rate=0.005, base_dtype=dtype)
        results[dtype] = run_trial(TrialRequest(0, plan, "minilm-l6", data.num_labels, "accuracy", fidelity, seed=1), data)
    trained = contexts["bfloat16"].peft_model
    assert {p.dtype for p in trained.parameters() if p.requires_grad} == {torch.float32}
    frozen = {n: p.dtype for n, p in trained.named_parameters() if not p.requires_grad}
    assert frozen["base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight"] == torch.bfloat16
    assert frozen["base_model.model.bert.embeddings.word_embeddings.weight"] == torch.float32
    assert frozen["base_model.model.bert.encoder.layer.0.attention.output.LayerNorm.weight"] == torch.float32
    linear = sum(p.numel() for p in trained.parameters() if p.dtype == torch.bfloat16)
    assert linear == model_shape("minilm-l6", data.num_labels).matmul_params  # the head's frozen original too
    floor = max(data.validation_labels[:500].count(label) for label in (0, 1)) / 500
    assert results["float32"].quality > floor + 0.1  # both learn: the comparison means something
    assert abs(results["bfloat16"].quality - results["float32"].quality) <= 0.02

    for name, content in results["bfloat16"].adapter_files.items():
        (tmp_path / name).write_bytes(content)
    context = contexts["bfloat16"]
    for dtype in ("float32", "bfloat16"):
        loaded = load_adapter(load_base("minilm-l6", data.num_labels, dtype)[1], tmp_path)
        assert {p.dtype for n, p in loaded.named_parameters() if "lora_" in n} == {torch.float32}
        context.fidelity = Fidelity(eval_examples=500, max_seq_length=64, base_dtype=dtype)
        assert evaluate(context, loaded)["accuracy"] == pytest.approx(results["bfloat16"].quality, abs=0.01)
