"""Encoders beyond BERT's layout: DeBERTa-v2/v3 and ModernBERT, on tiny models of each.

Exact counts for LoRA, IA3 (also where no groups are given: the family's own) and both
bottleneck adapters, adapters that save and reload with identical logits, the built-in spaces
that need a prefix refused by name, a real search whose exported point reloads with its quality,
a pooler the checkpoint lacks trained by every plan, ModernBERT's head as its pooler, and
gradient checkpointing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopeft.errors import UserError
from autopeft.space.search_space import load_space
from autopeft.workers.models import model_shape
from conftest import check_counts, reloads_identically

ENCODERS = {"tiny_deberta": "deberta", "tiny_modernbert": "modernbert"}


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request) -> tuple[str, str]:
    return ENCODERS[request.param], request.getfixturevalue(request.param)


def _space(tmp_path, shape) -> str:
    groups = list(shape.family.groups)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "encoder", "layers": "per_module", "modules": {
        "lora": {"groups": {g: [0, 2, 8] for g in groups if g != "ffn_out"}}, "ia3": {"groups": ["ffn_out"]},
        "serial": {"sizes": [0, 4, 8], "attention": True}, "parallel": {"sizes": [0, 4]}}}))
    return str(path)


def test_lora_ia3_and_both_adapters_count_exactly_what_peft_trains(encoder, tmp_path):
    family, path = encoder
    shape = model_shape(path, num_labels=3)
    assert shape.family.name == family
    check_counts(path, _space(tmp_path, shape), 10)


def test_ia3_with_no_groups_given_scales_what_the_family_has_and_counts_exactly(encoder, tmp_path):
    family, path = encoder
    shape = model_shape(path, num_labels=3)
    space = tmp_path / "ia3.yaml"
    space.write_text(yaml.safe_dump({"name": "ia3", "layers": "per_layer", "modules": {"ia3": {}}}))
    expected = {"deberta": ("key", "value", "ffn_out"), "modernbert": ("query_key_value", "ffn_out")}[family]
    assert load_space(str(space), shape).largest_plan()["ia3"].groups == expected
    check_counts(path, str(space), 4)


def test_the_largest_plan_saves_and_reloads_with_identical_logits(encoder, tmp_path):
    _, path = encoder
    shape = model_shape(path, num_labels=3)
    plan = load_space(_space(tmp_path, shape), shape).largest_plan()
    assert {"lora", "ia3", "serial", "parallel"} <= set(plan.methods) and plan["serial"].attention
    reloads_identically(path, plan, shape, tmp_path / "adapter")


def test_a_built_in_space_with_a_prefix_is_refused_naming_the_methods_and_built_in_spaces_that_fit(encoder):
    family, path = encoder
    fitting = "catalogue, lora"
    with pytest.raises(UserError, match=f"prefix modules do not fit {family} models.*use only .*lora.*serial, parallel.*; "
                                        f"or a built-in space that fits {family} models: {fitting}$"):
        load_space("autopeft", model_shape(path, num_labels=2))


def test_a_classification_search_on_each_encoder_exports_a_point_that_reloads_with_its_quality(
        encoder, tmp_path, reviews_csv, ray_local):
    from transformers import AutoModelForSequenceClassification

    import autopeft
    from autopeft.api import export
    from conftest import three_trial_search
    from test_export import _validation_accuracy

    family, path = encoder
    job = three_trial_search(tmp_path, path, reviews_csv, _space(tmp_path, model_shape(path, num_labels=2)), ["houlsby", "ia3"])
    exported = export(job, "best", tmp_path / "out")  # DeBERTa's: the random pooler it trained goes with it
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, ignore_mismatched_sizes=True)
    model = autopeft.load_adapter(base, tmp_path / "out")
    assert exported.plan.pooler == (family == "deberta")
    accuracy = _validation_accuracy(model, job, path)
    assert accuracy == pytest.approx(info["quality"], abs=1.5 / job.fidelity.eval_examples)


def test_a_pooler_the_checkpoint_lacks_is_trained_by_every_plan_and_saved_with_the_adapter(tiny_deberta, tiny_bert, tmp_path):
    from autopeft.run.prepare import baseline_plans
    from autopeft.workers.methods import baseline_plan

    fresh, kept = model_shape(tiny_deberta, num_labels=3), model_shape(tiny_bert, num_labels=3)
    assert fresh.pooler_fresh and fresh.pooler_params > 0
    assert not kept.pooler_fresh and kept.pooler_params > 0  # a BERT saved with its pooler keeps it frozen
    space = load_space(_space(tmp_path, fresh), fresh)
    plans = [space.decode(p) for p in ({d.name: 0 for d in space.dimensions}, {d.name: 1 for d in space.dimensions})]
    plans += [space.smallest_plan(), baseline_plan("lora-r8", fresh), baseline_plan("houlsby", fresh)]
    assert all(plan.pooler for plan in plans if not plan.is_empty)
    assert not baseline_plan("lora-r8", kept).pooler and not baseline_plan("full", fresh).pooler
    for space_pooler in ([0, 8, "full"], "search"):  # a frozen random pooler, or a LoRA on one, is refused
        path = tmp_path / f"pooler-{len(space_pooler)}.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(Path(_space(tmp_path, fresh)).read_text()), "pooler": space_pooler}))
        with pytest.raises(UserError, match="pooler: the checkpoint holds no pooler weights.*leave pooler out"):
            load_space(str(path), fresh)
    with pytest.raises(UserError, match="'lora-r8\\+pooler-r8': the checkpoint holds no pooler weights.*use 'lora-r8'"):
        baseline_plans(["lora-r8+pooler-r8"], fresh)
    check_counts(tiny_deberta, _space(tmp_path, fresh), 6)  # the pooler counted as peft trains it
    reloads_identically(tiny_deberta, baseline_plan("lora-r8", fresh), fresh, tmp_path / "lora")  # its trained weights saved


def test_modernberts_head_is_its_pooler_trained_whole_or_with_a_lora_where_a_plan_asks(tiny_modernbert, tmp_path):
    from autopeft.workers.methods import baseline_plan

    shape = model_shape(tiny_modernbert, num_labels=3)
    assert shape.pooler_params > 0 and set(shape.pooler_linears) == {"head.dense"} and not shape.pooler_fresh
    assert not baseline_plan("houlsby", shape).pooler  # frozen, as peft leaves it, unless a plan trains it
    for name in ("houlsby+pooler", "houlsby+pooler-r8"):
        reloads_identically(tiny_modernbert, baseline_plan(name, shape), shape, tmp_path / name)
    path = tmp_path / "pooled.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(Path(_space(tmp_path, shape)).read_text()), "pooler": [0, 8, "full"]}))
    check_counts(tiny_modernbert, str(path), 8)


@pytest.mark.parametrize("baseline", ["houlsby", "lora-mlp-r8"])
def test_gradient_checkpointing_trains_the_same_steps_on_each_encoder(encoder, reviews_csv, baseline):
    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    _, path = encoder
    data = load_task_data(TaskSpec(train_file=str(reviews_csv), text_columns=["review"], label_column="sentiment",
                                   validation_size=32))
    plan = baseline_plan(baseline, model_shape(path, num_labels=2))
    results = []
    for checkpointing in (False, True):
        fidelity = Fidelity(train_examples=32, eval_examples=32, batch_size=8, max_seq_length=32, learning_rate=0.01,
                            gradient_checkpointing=checkpointing)
        results.append(run_trial(TrialRequest(0, plan, path, 2, "accuracy", fidelity, 0, save_adapter=False), data))
    plain, checkpointed = (r.metrics for r in results)
    assert checkpointed["train_steps"] == plain["train_steps"] == 4
    assert checkpointed["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4)
    assert results[1].quality == pytest.approx(results[0].quality, abs=1e-6)


@pytest.mark.parametrize("config", ["EsmConfig", "XLMRobertaXLConfig"])
def test_every_baseline_that_fits_a_pre_norm_bert_trains_and_reloads_with_identical_logits(config, tmp_path_factory,
                                                                                            tmp_path):
    """ESM (protein models) and XLM-R XL are built like BERT with each sub-layer's LayerNorm before it, so their
    output blocks add the residual with no norm: parallel adapters took the FFN's inner activations for its input."""
    import transformers

    from conftest import fitting_baselines, tiny_model

    path = tiny_model(tmp_path_factory, f"tiny-{config}", getattr(transformers, config)(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        pad_token_id=1, max_position_embeddings=128))
    shape = model_shape(path, num_labels=3)
    assert shape.family.name == "bert"
    plans = fitting_baselines(shape)
    assert {"houlsby", "pfeiffer", "parallel", "mam", "lora-r8", "ia3", "bitfit"} <= set(plans)
    for name, plan in plans.items():
        if name != "full":
            reloads_identically(path, plan, shape, tmp_path / name)


@pytest.mark.parametrize("config", ["ElectraConfig", "OPTConfig"])
def test_prompt_tuning_learns_tokens_as_wide_as_the_input_embeddings_where_they_are_narrower_than_the_layers(
        config, tmp_path_factory, tmp_path):
    """ELECTRA-small embeds tokens in 128 dimensions and projects them to its 256-wide layers, OPT-350m in 512 for
    1,024: virtual tokens as wide as the layers failed in the first forward pass."""
    import transformers

    from autopeft.run.prepare import baseline_plans
    from conftest import tiny_model

    narrow = {"ElectraConfig": dict(embedding_size=16, hidden_size=32, intermediate_size=64, num_attention_heads=2),
              "OPTConfig": dict(word_embed_proj_dim=16, hidden_size=32, ffn_dim=64, num_attention_heads=2)}[config]
    path = tiny_model(tmp_path_factory, f"tiny-narrow-{config}", getattr(transformers, config)(
        vocab_size=30522, num_hidden_layers=2, **narrow))
    shape = model_shape(path, num_labels=3)
    assert (shape.embedding_width, shape.hidden_size) == (16, 32)
    plan = baseline_plans(["prompt-20"], shape)["prompt-20"]
    reloads_identically(path, plan, shape, tmp_path / "prompt")  # counts 20 x 16 as peft does, and trains
