"""Multi-fidelity search (``fidelity.schedule: asha``): trials trained in rungs, promoted by their rank."""

import pytest
import torch
from safetensors.torch import load

from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.workers.methods.lora import Lora, LoraTarget
from autopeft.workers.plan import Plan
from autopeft.workers.trial import run_trial
from autopeft.workers.types import Fidelity, TrialRequest


@pytest.fixture(scope="module")
def reviews(reviews_csv):
    return load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))


def test_a_trial_trained_rung_after_rung_trains_exactly_as_one_training(tiny_bert, reviews):
    plan = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0, 1)), LoraTarget("ffn_out", 2, 4.0, (1,)))))
    fidelity = Fidelity(train_examples=64, eval_examples=64, batch_size=8, max_seq_length=32, epochs=2, learning_rate=0.02)
    request = TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1)
    whole = run_trial(request, reviews)
    first = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, stop_at=1 / 3), reviews)
    second = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, stop_at=0.75,
                                   resume=first.checkpoint), reviews)
    last = run_trial(TrialRequest(0, plan, tiny_bert, 2, "accuracy", fidelity, seed=1, resume=second.checkpoint), reviews)
    assert [r.metrics["train_steps"] for r in (first, second, last)] == [5, 7, 4]  # 16 steps: 1/3 and 3/4 of them
    assert first.checkpoint and second.checkpoint and last.checkpoint is None
    assert not first.adapter_files and not second.adapter_files and last.adapter_files  # only the last rung's adapter
    # the same weights as one training (up to the float noise of threaded CPU kernels), not a restart's
    assert last.metrics["train_loss"] == pytest.approx(whole.metrics["train_loss"], abs=2e-3)
    weights, reference = (load(r.adapter_files["adapter_model.safetensors"]) for r in (last, whole))
    assert weights.keys() == reference.keys()
    assert all(torch.allclose(weights[k], reference[k], atol=1e-3) for k in weights)
    assert abs(last.quality - whole.quality) <= 2 / 64


def test_a_checkpoint_of_another_plan_is_refused(tiny_bert, reviews):
    fidelity = Fidelity(train_examples=32, eval_examples=16, batch_size=8, max_seq_length=32)
    one = Plan.of(Lora((LoraTarget("query", 4, 8.0, (0,)),)))
    other = Plan.of(Lora((LoraTarget("value", 4, 8.0, (1,)),)))
    first = run_trial(TrialRequest(0, one, tiny_bert, 2, "accuracy", fidelity, seed=0, stop_at=0.5), reviews)
    with pytest.raises(ValueError, match="another plan"):
        run_trial(TrialRequest(0, other, tiny_bert, 2, "accuracy", fidelity, seed=0, resume=first.checkpoint), reviews)
