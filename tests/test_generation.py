"""Generation tasks on a tiny Llama: instruction data, completion-only loss, exact match, the zero-shot floor."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from autopeft.api import submit
from autopeft.cli import main
from autopeft.job.load import load_job
from autopeft.workers.metrics import exact_match, normalise
from conftest import CHAT_TEMPLATE, TINY_FIDELITY, tiny_decoder, write_job

FIDELITY = {**TINY_FIDELITY, "train_examples": 256, "eval_examples": 40, "epochs": 2, "learning_rate": 0.02}


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory, reviews_csv) -> str:
    from transformers import LlamaConfig

    return tiny_decoder(tmp_path_factory, "tiny-llama-chat", reviews_csv, LlamaConfig, chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def plain_llama(tmp_path_factory, reviews_csv) -> str:
    from transformers import LlamaConfig

    return tiny_decoder(tmp_path_factory, "tiny-llama-plain", reviews_csv, LlamaConfig)


@pytest.fixture(scope="module")
def instructions(tmp_path_factory, reviews_csv):
    """The reviews as prompt/completion pairs (CSV) and as chat conversations (JSONL)."""
    frame = pd.read_csv(reviews_csv)
    directory = tmp_path_factory.mktemp("instructions")
    pairs = directory / "pairs.csv"
    pd.DataFrame({"prompt": frame["review"].str.lower(), "completion": frame["sentiment"]}).to_csv(pairs, index=False)
    chats = directory / "chats.jsonl"
    pd.DataFrame({"messages": [[{"role": "user", "content": r.lower()}, {"role": "assistant", "content": s}]
                               for r, s in zip(frame["review"], frame["sentiment"], strict=True)]}).to_json(
        chats, orient="records", lines=True)
    return pairs, chats


def test_exact_match_ignores_case_surrounding_space_and_punctuation():
    assert normalise("  Fresh.\n") == "fresh" and normalise("rotten!!") == "rotten"
    assert exact_match(["fresh", "rotten", "fresh"], ["Fresh.", "fresh", " FRESH "]) == pytest.approx(2 / 3)


def test_a_generation_search_learns_above_the_zero_shot_floor(tmp_path, plain_llama, instructions, ray_local):
    job = load_job(write_job(
        tmp_path, model=plain_llama, search_space="lora", baselines=["lora-r8", "ia3", "prompt-20"], fidelity=FIDELITY,
        task={"type": "generation", "train_file": str(instructions[0]), "validation_size": 40},
        budget={"trials": 3, "parallel": 2}, optimizer={"sampler": "random"},
    ))
    assert job.task.metric == "exact_match"
    summary = submit(job, progress=False)
    assert summary.finished == 3 and summary.failed == 0
    assert set(summary.baselines) == {"lora-r8", "ia3", "prompt-20"}  # soft prompts generate through peft's prompt learning
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    floor = study.user_attrs["reference"]["quality"]
    assert summary.reference.quality == floor and 0.0 <= floor <= 1.0  # the untrained model's own score
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs:
            metrics = t.user_attrs["metrics"]
            assert t.values[0] == metrics["exact_match"] and 0.0 <= metrics["token_accuracy"] <= 1.0
    best = max(p.quality for p in [*summary.front, *summary.baselines.values()])
    assert best > floor  # trained on the completions, some plan answers fresh or rotten better than the base model
    client = MlflowClient(job.mlflow_uri)
    parent = client.get_run(summary.parent_run_id)
    assert float(parent.data.params["reference.quality"]) == floor

    # the export is a causal-LM adapter that peft alone loads on AutoModelForCausalLM, its trained weights with it
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autopeft.api import export

    exported = export(job, "baseline=lora-r8", tmp_path / "adapter")
    info = json.loads((tmp_path / "adapter" / "autopeft_point.json").read_text())
    assert info["labels"] is None and info["load_with"].startswith("peft.PeftModel")
    assert PeftConfig.from_pretrained(str(tmp_path / "adapter")).task_type == "CAUSAL_LM"
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(plain_llama), str(tmp_path / "adapter"))
    assert sum(p.numel() for n, p in loaded.named_parameters() if "lora_" in n) == exported.point.params
    batch = AutoTokenizer.from_pretrained(plain_llama)(["a tedious film"], return_tensors="pt")
    with torch.no_grad():
        tuned = loaded(**batch).logits
        with loaded.disable_adapter():
            untuned = loaded(**batch).logits
    assert not torch.allclose(tuned, untuned)  # the trained LoRA, not a fresh one (whose B is zero), was loaded


def test_chat_messages_are_rendered_with_the_chat_template(tmp_path, chat_llama, instructions, ray_local):
    job = load_job(write_job(
        tmp_path, model=chat_llama, search_space="lora", fidelity=FIDELITY,
        task={"type": "generation", "train_file": str(instructions[1]), "validation_size": 40, "metric": "token_accuracy"},
        objectives={"quality_floor": 0.0}, budget={"trials": 2, "parallel": 2}, optimizer={"sampler": "random"},
    ))
    summary = submit(job, progress=False)
    assert summary.finished == 2 and summary.failed == 0 and summary.reference.quality == 0.0
    assert all(0.0 <= p.quality <= 1.0 for p in summary.front)


def test_long_examples_keep_their_completion_and_are_counted(plain_llama, instructions):
    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.plan import Plan
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    data = load_task_data(TaskSpec(type="generation", train_file=instructions[0], validation_size=20))
    lengths = [len(prompt.split()) + 2 for prompt, _ in data.validation_texts]  # words, the answer and </s>
    for limit in (8, 512):
        fidelity = Fidelity(eval_examples=20, max_seq_length=limit, batch_size=8)
        result = run_trial(TrialRequest(None, Plan(), plain_llama, 0, "token_accuracy", fidelity, 0, zero_shot=True), data)
        assert result.metrics["truncated_examples"] == sum(n > limit for n in lengths)
        assert 0.0 <= result.metrics["token_accuracy"] <= 1.0 and "exact_match" in result.metrics


def test_a_test_file_of_instructions_is_scored_whole_after_a_re_training_and_only_when_asked(plain_llama, instructions,
                                                                                             tmp_path):
    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.run.prepare import baseline_plans
    from autopeft.workers.models import model_shape
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    test = tmp_path / "test.jsonl"
    pd.read_csv(instructions[0]).iloc[:30].to_json(test, orient="records", lines=True)
    data = load_task_data(TaskSpec(type="generation", train_file=instructions[0], validation_size=20, test_file=test))
    assert len(data.test_texts) == 30 and data.test_labels == ()
    lengths = [len(prompt.split()) + 2 for prompt, _ in data.test_texts]  # words, the answer and </s>
    plan = baseline_plans(["lora-r8"], model_shape(plain_llama, 0))["lora-r8"]
    fidelity = Fidelity(train_examples=16, eval_examples=8, max_seq_length=8, batch_size=8)
    request = TrialRequest(None, plan, plain_llama, 0, "token_accuracy", fidelity, 0, save_adapter=False)
    searched = run_trial(request, data)
    assert searched.test_quality is None and not any(k.startswith("test_") for k in searched.metrics)
    retrained = run_trial(replace(request, score_test=True), data)
    # every one of the 30 test examples is scored, not the 8 a trial scores of the validation split
    assert retrained.metrics["test_truncated_examples"] == sum(n > 8 for n in lengths) > 8
    assert retrained.test_quality == retrained.metrics["test_token_accuracy"] and "test_exact_match" in retrained.metrics
    assert {k for k in retrained.metrics if not k.startswith("test_")} == set(searched.metrics)


def _cli(capsys, job_file) -> tuple[int, str]:
    code = main(["submit", str(job_file)])
    return code, capsys.readouterr().err.strip()


def test_bad_generation_input_gets_one_message(tmp_path, capsys, plain_llama, instructions, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs, chats = instructions
    frame = pd.read_csv(pairs)
    frame.loc[3, "completion"] = "  "
    (tmp_path / "empty.csv").write_text(frame.to_csv(index=False))
    cases = [
        ({"train_file": str(chats)}, ["task.messages_column", "has no chat template", "prompt and completion columns"]),
        ({"train_file": str(tmp_path / "empty.csv")}, ["task.completion_column", "1 examples", "empty completion"]),
        ({"train_file": str(pairs), "prompt_column": "question"}, ["task.prompt_column/completion_column", "'question'",
                                                                    "its columns: prompt, completion"]),
        ({"train_file": str(pairs), "metric": "accuracy"}, ["task", "metric 'accuracy' does not fit a generation task",
                                                            "exact_match, token_accuracy"]),
    ]
    no_eos = tmp_path / "no-eos"  # the same decoder, its tokenizer without an end-of-sequence token
    shutil.copytree(plain_llama, no_eos)
    config = json.loads((no_eos / "tokenizer_config.json").read_text())
    (no_eos / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "eos_token"}))
    models = {"minilm-l6": ["model: 'minilm-l6' is an encoder (bert)", "does not generate", "task.type: classification"],
              str(no_eos): ["has no end-of-sequence token", "eos_token"]}
    cases += [({"train_file": str(pairs)}, words) for words in models.values()]
    for (task, words), model in zip(cases, [plain_llama] * (len(cases) - len(models)) + list(models), strict=True):
        job_file = write_job(tmp_path, model=model, task={"type": "generation", **task})
        code, err = _cli(capsys, job_file)
        assert code == 2 and err.startswith("autopeft: error: ") and len(err.splitlines()) == 1, err
        for word in words:
            assert word in err, err
        assert not (tmp_path / "run").exists()
    job_file = write_job(tmp_path, model=str(no_eos), task={"train_file": str(pairs), "text_columns": ["prompt"],
                                                            "label_column": "completion"})  # a classifier pads too
    code, err = _cli(capsys, job_file)
    assert code == 2 and "has neither a padding token nor an end-of-sequence token to pad batches with" in err, err
    assert json.loads(chats.read_text().splitlines()[0])["messages"][-1]["role"] == "assistant"


def test_conversations_the_chat_template_refuses_are_named_before_the_search(tmp_path, tmp_path_factory, capsys,
                                                                            reviews_csv, instructions, monkeypatch):
    """Gemma's and Mistral's templates, among others, raise on a system message: every trial failed with it."""
    from transformers import LlamaConfig

    no_system = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                 + CHAT_TEMPLATE)
    model = tiny_decoder(tmp_path_factory, "tiny-llama-no-system", reviews_csv, LlamaConfig, chat_template=no_system)
    monkeypatch.chdir(tmp_path)
    chats = [json.loads(line)["messages"] for line in instructions[1].read_text().splitlines()]
    system = [{"role": "system", "content": "answer fresh or rotten"}]
    for name, conversations in (("plain", chats), ("system", chats[:-5] + [system + c for c in chats[-5:]])):
        pd.DataFrame({"messages": conversations}).to_json(tmp_path / f"{name}.jsonl", orient="records", lines=True)
    job_file = write_job(tmp_path, model=model, task={"type": "generation", "train_file": "system.jsonl"})
    capsys.readouterr()  # the tiny model's own output as it was saved
    code, err = _cli(capsys, job_file)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert ("task.messages_column: the chat template of" in err and "refuses a conversation of system, user messages "
            "before the answer: System role not supported" in err and "put it at the start of the first user" in err), err
    assert not (tmp_path / "run").exists()
    assert main(["check", str(write_job(tmp_path, model=model, task={"type": "generation", "train_file": "plain.jsonl"}))]) == 0


@pytest.mark.integration
def test_the_decoder_demo_in_short_beats_the_zero_shot_model(tmp_path, ray_local):
    """``demo-decoder`` on SmolLM2-135M with one searched trial, a baseline and a small fidelity."""
    job = load_job("demo-decoder")
    job = job.model_copy(update={
        "stores": job.stores.model_copy(update={"run_dir": tmp_path / "run"}),
        "baselines": ["lora-r8"],
        "budget": job.budget.model_copy(update={"trials": 1}),
        "fidelity": job.fidelity.model_copy(update={"train_examples": 48, "eval_examples": 24}),
    })
    summary = submit(job, progress=False)
    assert summary.finished == 1 and summary.failed == 0
    assert summary.baselines["lora-r8"].params == 460_800
    best = max(p.quality for p in [*summary.front, *summary.baselines.values()])
    assert best >= summary.reference.quality + 0.2, (best, summary.reference.quality)


def test_gradient_checkpointing_trains_the_same_steps(plain_llama, instructions):
    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import model_shape
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    data = load_task_data(TaskSpec(type="generation", train_file=instructions[0], validation_size=20))
    plan = baseline_plan("lora-r8", model_shape(plain_llama, 0))
    results = []
    for checkpointing in (False, True):
        fidelity = Fidelity(train_examples=32, eval_examples=20, batch_size=8, max_seq_length=48,
                            learning_rate=0.01, gradient_checkpointing=checkpointing)
        results.append(run_trial(TrialRequest(0, plan, plain_llama, 0, "exact_match", fidelity, 0, save_adapter=False), data))
    plain, checkpointed = (r.metrics for r in results)
    assert checkpointed["train_steps"] == plain["train_steps"] == 4
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    assert checkpointed["token_accuracy"] == pytest.approx(plain["token_accuracy"], abs=1e-6)


def test_gemma3_as_an_image_text_model_trains_on_instructions_exactly_as_its_language_model_alone(
        tmp_path_factory, reviews_csv, instructions):
    """Gemma 3 of 4B and more is published as an image-text model, a vision tower beside the language model's
    layers: every plan goes in the language model, and a text task trains as on the text-only model."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig

    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.build import apply_plan, count_trainable
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import model_shape
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest
    from conftest import base_model

    text = tiny_decoder(tmp_path_factory, "tiny-gemma3-text", reviews_csv, lambda **sizes: Gemma3TextConfig(**sizes, head_dim=8))
    language = AutoModelForCausalLM.from_pretrained(text)
    torch.manual_seed(0)
    both = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=language.config.to_dict(), mm_tokens_per_image=4, vision_config=dict(
            hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)))
    both.model.language_model.load_state_dict(language.model.state_dict())
    both.lm_head.load_state_dict(language.lm_head.state_dict())
    image_text = tmp_path_factory.mktemp("tiny-gemma3")
    both.save_pretrained(image_text)
    for file in Path(text).glob("*token*"):
        shutil.copy(file, image_text)

    data = load_task_data(TaskSpec(type="generation", train_file=instructions[0], validation_size=20))
    fidelity = Fidelity(train_examples=32, eval_examples=20, batch_size=8, max_seq_length=48, learning_rate=0.02)
    shapes = {path: model_shape(path, 0) for path in (text, str(image_text))}
    assert [s.family.name for s in shapes.values()] == ["llama", "gemma3"]
    for name in ("lora-r8", "prefix-10", "full"):  # full fine-tuning trains the language model alone too
        assert len({count_trainable(baseline_plan(name, shape), shape) for shape in shapes.values()}) == 1
        results = [run_trial(TrialRequest(0, baseline_plan(name, shape), path, 0, "token_accuracy", fidelity, 0,
                                          save_adapter=False), data).metrics for path, shape in shapes.items()]
        assert results[0]["train_loss"] == pytest.approx(results[1]["train_loss"], rel=1e-5)
        assert results[0]["token_accuracy"] == results[1]["token_accuracy"]
    model = apply_plan(base_model(str(image_text), 0), baseline_plan("full", shapes[str(image_text)]), shapes[str(image_text)])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == shapes[text].base_params
