"""Training memory: the estimate, the memory budget of a search, and trials that run out of memory."""

from __future__ import annotations

import optuna
import pytest
import yaml

from autopeft.api import submit
from autopeft.record.study import StudyRecord
from autopeft.workers.build import count_trainable
from autopeft.workers.memory import estimate_memory
from autopeft.workers.methods import baseline_plan
from autopeft.workers.methods.lora import Lora
from autopeft.workers.models import model_shape
from autopeft.workers.types import Fidelity
from conftest import TINY_FLOOR
from test_search import runs_of, tiny_job


def _estimate(shape, plan, **fidelity):
    return estimate_memory(plan, shape, Fidelity(**fidelity), count_trainable(plan, shape))


def test_the_estimate_grows_with_batch_length_and_depth_and_shrinks_with_checkpointing(tiny_bert):
    from dataclasses import replace

    shape = model_shape(tiny_bert, num_labels=2)
    lora = baseline_plan("lora-r8", shape)
    top_only = type(lora).of(Lora(tuple(replace(t, layers=(shape.num_layers - 1,)) for t in lora["lora"].targets)))
    base = _estimate(shape, lora, batch_size=16, max_seq_length=64)
    assert base.weights == 4 * (shape.base_params + count_trainable(lora, shape))
    assert base.training_state == 12 * count_trainable(lora, shape)
    assert _estimate(shape, lora, batch_size=32, max_seq_length=64).activations == 2 * base.activations
    assert _estimate(shape, lora, batch_size=16, max_seq_length=128).activations > 2 * base.activations  # attention scores
    on_gpu = [estimate_memory(lora, shape, Fidelity(batch_size=16, max_seq_length=n), count_trainable(lora, shape), gpu=True)
              for n in (64, 128)]  # bf16, and CUDA's fused attention keeps no scores
    assert on_gpu[1].activations == 2 * on_gpu[0].activations and on_gpu[0].activations < base.activations / 2
    assert _estimate(shape, top_only, batch_size=16, max_seq_length=64).activations == base.activations / shape.num_layers
    full = _estimate(shape, baseline_plan("full", shape), batch_size=16, max_seq_length=64)
    assert full.training_state == 12 * shape.base_params and full.weights == 4 * shape.base_params
    assert base.output == 0  # a classifier's logits are negligible; a causal LM's are not
    decoder = model_shape("smollm2-135m", num_labels=0)
    deep = _estimate(decoder, baseline_plan("lora-r8", decoder), batch_size=4, max_seq_length=128)
    assert deep.output == 4 * 128 * 49152 * 4 * 3
    checkpointed = _estimate(decoder, baseline_plan("lora-r8", decoder), batch_size=4, max_seq_length=128,
                             gradient_checkpointing=True)
    assert checkpointed.activations < deep.activations / 5  # 30 layers: their inputs and two layers' worth


@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_deberta"])
def test_the_estimate_holds_what_autograd_keeps_relative_attention_included(encoder, request):
    import torch

    from autopeft.workers.build import apply_plan
    from autopeft.workers.memory import SavedActivations
    from conftest import base_model

    path = request.getfixturevalue(encoder)
    shape = model_shape(path, num_labels=2)
    plan = baseline_plan("houlsby", shape)  # adapters in every layer: autograd keeps every layer
    model = apply_plan(base_model(path, num_labels=2), plan, shape).train()
    batch = torch.randint(1000, 2000, (4, 64))
    saved = SavedActivations()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=torch.zeros(4, dtype=torch.long)).loss
    loss.backward()
    on_cpu = _estimate(shape, plan, batch_size=4, max_seq_length=64)
    assert saved.peak > 0 and on_cpu.activations >= saved.peak
    on_gpu = [estimate_memory(plan, shape, Fidelity(batch_size=4, max_seq_length=n), count_trainable(plan, shape), gpu=True)
              for n in (64, 128)]
    if shape.relative_width:  # DeBERTa's own attention keeps its score rows on a GPU as well
        assert shape.relative_width == 512 and 2 * on_gpu[0].activations == on_cpu.activations  # bf16: half the bytes
        assert on_gpu[1].activations > 2 * on_gpu[0].activations
    else:
        assert on_gpu[1].activations == 2 * on_gpu[0].activations


@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_deberta"])
def test_a_bf16_base_halves_the_frozen_weights_and_the_estimate_still_holds_what_autograd_keeps(encoder, request):
    """``fidelity.base_dtype: bfloat16``: the base's linear layers count 2 bytes a weight, what trains 4; on a
    CPU, autocast keeps most activations in fp32, and the estimate counts them so."""
    import torch

    from autopeft.workers.build import apply_plan
    from autopeft.workers.memory import SavedActivations
    from autopeft.workers.models import load_base

    path = request.getfixturevalue(encoder)
    shape = model_shape(path, num_labels=2)
    plan = baseline_plan("houlsby", shape)
    trainable = count_trainable(plan, shape)
    fp32, bf16 = (_estimate(shape, plan, batch_size=4, max_seq_length=64, base_dtype=d) for d in ("float32", "bfloat16"))
    assert 0 < shape.matmul_params < shape.base_params  # the linear layers, not the embeddings
    assert bf16.weights == 2 * shape.matmul_params + 4 * (shape.base_params - shape.matmul_params + trainable) < fp32.weights
    assert bf16.training_state == fp32.training_state and bf16.activations == fp32.activations
    full = baseline_plan("full", shape)
    assert _estimate(shape, full, base_dtype="bfloat16").weights == _estimate(shape, full).weights  # it all trains in fp32

    model = apply_plan(load_base(path, 2, "bfloat16")[1], plan, shape).train()
    batch = torch.randint(1000, 2000, (4, 64))
    saved = SavedActivations()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=batch, attention_mask=torch.ones_like(batch), labels=torch.zeros(4, dtype=torch.long)).loss
    loss.backward()
    assert saved.peak > 0 and bf16.activations >= saved.peak


def _layer_space(tmp_path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "depth", "layers": "per_layer",
                                    "modules": {"lora": {"groups": {"query": [0, 2, 8], "ffn_in": [0, 4]}}}}))
    return str(path)


def test_a_memory_budget_is_never_exceeded_and_each_trial_records_its_estimate(tmp_path, tiny_bert, reviews_csv, ray_local):
    from autopeft.run.prepare import prepare

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, search_space=_layer_space(tmp_path), budget={"trials": 4, "parallel": 2})
    prepared = prepare(job)
    space = prepared.space
    deep, shallow = prepared.memory_gb(space.largest_plan()), prepared.memory_gb(space.smallest_plan(top=True))
    limit = (deep + shallow) / 2  # plans that train the lower layer are over it
    job = job.model_copy(update={"budget": job.budget.model_copy(update={"max_memory_gb": limit})})
    summary = submit(job, progress=False)
    assert summary.finished == 4 and summary.failed == 0
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = StudyRecord(study).trained()
    assert len(trained) == 4 and all(t.user_attrs["memory_estimate_gb"] <= limit for t in trained)
    skipped = [t for t in study.trials if "skipped" in t.user_attrs]
    assert all(t.user_attrs["memory_estimate_gb"] > limit and "GiB of training memory exceeds the budget" in
               t.user_attrs["skipped"] for t in skipped if "memory" in t.user_attrs["skipped"])
    _, _, children = runs_of(job)
    assert sorted(float(c.data.params["memory_estimate_gb"]) for c in children) == \
        pytest.approx(sorted(t.user_attrs["memory_estimate_gb"] for t in trained))


def test_a_trial_that_runs_out_of_memory_is_recorded_and_no_plan_as_large_is_proposed_again(
        tmp_path, tiny_bert, reviews_csv, ray_local):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, search_space=_layer_space(tmp_path), seed=3,
                   trainer="trainers:out_of_memory_below_top_layer", budget={"trials": 5, "parallel": 1},
                   objectives={"quality_floor": TINY_FLOOR})
    summary = submit(job, progress=False)
    assert summary.finished == 5
    study = optuna.load_study(study_name=job.name, storage=job.optuna_storage)
    trained = StudyRecord(study).trained()
    failed = [t for t in trained if t.state == optuna.trial.TrialState.FAIL]
    assert failed and summary.failed == len(failed)
    assert all(t.user_attrs["failure"] == "out of memory" and "OutOfMemoryError" in t.user_attrs["error"] for t in failed)
    for t in trained:  # a plan as large as one that ran out of memory is not tried again
        earlier = [f.user_attrs["memory_estimate_gb"] for f in failed if f.number < t.number]
        assert all(t.user_attrs["memory_estimate_gb"] < gb for gb in earlier)
    assert summary.finished - summary.failed >= 1 and summary.front
    _, _, children = runs_of(job)
    tagged = {int(c.data.tags["autopeft.trial"]) for c in children if c.data.tags.get("autopeft.failure") == "out of memory"}
    assert tagged == {t.number for t in failed}
    assert all(c.info.status == "FAILED" for c in children if int(c.data.tags["autopeft.trial"]) in tagged)
