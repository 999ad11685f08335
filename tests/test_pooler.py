"""``pooler`` in a space file: a BERT-family classifier's pooler trains with the head when a plan says
so, whole or through a LoRA on its dense layer, counted exactly, saved in the adapter and reloaded by
peft; a model without one is refused."""

from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from autopeft.errors import UserError
from autopeft.run.prepare import baseline_plans
from autopeft.space.search_space import load_space
from autopeft.workers.build import WEIGHTS_FILE, apply_plan, count_trainable, save_adapter
from autopeft.workers.methods import baseline_plan
from autopeft.workers.models import model_shape
from autopeft.workers.plan import Plan
from conftest import base_model, reloads_identically


def _space(tmp_path, pooler, modules=None) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "modules": modules or {"lora": {"groups": {"query": [0, 4], "value": [0, 4]}}},
                                    "pooler": pooler}))
    return str(path)


def test_a_searched_pooler_is_one_dimension_counted_exactly_and_reloaded_alone_and_beside_other_methods(tiny_bert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    hidden = shape.hidden_size
    assert shape.pooler_params == hidden * hidden + hidden
    for modules in ({"lora": {"groups": {"query": [0, 4], "value": [0, 4]}}},
                    {"lora": {"groups": {"query": [0, 4]}}, "serial": {"sizes": [0, 8]}}):
        space = load_space(_space(tmp_path, "search", modules), shape)
        assert "pooler" in [d.name for d in space.dimensions]
        top = {d.name: len(d.choices) - 1 for d in space.dimensions}
        with_pooler, without = space.decode(top), space.decode({**top, "pooler": 0})
        assert with_pooler.pooler and not without.pooler and with_pooler.describe().endswith("+ pooler")
        assert space.count(with_pooler) - space.count(without) == shape.pooler_params
        assert Plan.from_dict(with_pooler.to_dict()) == with_pooler
        assert Plan.from_dict(without.to_dict()) == without and "pooler" not in without.to_dict()
        reloads_identically(tiny_bert, with_pooler, shape, tmp_path / f"reload-{len(modules)}")


def test_the_pooler_trains_only_where_the_plan_says_and_its_weights_are_in_the_adapter(tiny_bert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    space = load_space(_space(tmp_path, "search"), shape)
    top = {d.name: len(d.choices) - 1 for d in space.dimensions}
    for on in (0, 1):
        plan = space.decode({**top, "pooler": on})
        model = apply_plan(base_model(tiny_bert), plan, shape)
        trained = {n for n, p in model.named_parameters() if p.requires_grad}
        assert any("pooler" in n for n in trained) == bool(on)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count_trainable(plan, shape)
        save_adapter(model, tmp_path / f"adapter-{on}")
        saved = load_file(str(tmp_path / f"adapter-{on}" / WEIGHTS_FILE))
        assert any("pooler" in k for k in saved) == bool(on)


def test_a_fixed_pooler_trains_in_every_plan_and_the_smallest_plan_includes_it(tiny_bert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    space = load_space(_space(tmp_path, True), shape)
    assert "pooler" not in [d.name for d in space.dimensions]
    assert space.smallest_plan().pooler and space.largest_plan().pooler
    assert load_space(_space(tmp_path, False), shape).smallest_plan().pooler is False


@pytest.mark.parametrize("encoder", ["tiny_distilbert", "tiny_mpnet"])  # their classifiers hold their own dense layer
def test_a_model_without_a_pooler_refuses_it_naming_the_field_and_the_fix(encoder, request, tmp_path):
    shape = model_shape(request.getfixturevalue(encoder), num_labels=3)
    assert shape.pooler_params == 0
    with pytest.raises(UserError) as error:
        load_space(_space(tmp_path, "search"), shape)
    assert "pooler" in str(error.value) and "leave pooler out" in str(error.value)


def test_full_fine_tuning_never_counts_the_pooler_twice(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=3)
    full = baseline_plan("full", shape)
    assert not Plan.of(*full.parts, pooler=True).pooler
    assert count_trainable(full, shape) == shape.base_params


def test_a_pooler_value_other_than_true_false_or_search_is_refused_with_the_choices(tiny_bert, tmp_path):
    with pytest.raises(UserError) as error:
        load_space(_space(tmp_path, "maybe"), model_shape(tiny_bert, num_labels=3))
    assert "pooler is true, false, search or a list such as [0, 8, full]" in str(error.value)


def test_a_baseline_name_with_plus_pooler_is_the_same_plan_with_its_pooler_trained(tiny_bert, tiny_distilbert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    plans = baseline_plans(["lora-r8", "lora-r8+pooler", "houlsby+pooler"], shape)
    assert plans["lora-r8+pooler"] == Plan.of(*plans["lora-r8"].parts, pooler=True)
    assert count_trainable(plans["lora-r8+pooler"], shape) - count_trainable(plans["lora-r8"], shape) == shape.pooler_params
    assert plans["houlsby+pooler"].describe().endswith("+ pooler")
    reloads_identically(tiny_bert, baseline_plan("houlsby+pooler", shape), shape, tmp_path / "houlsby")
    for name, model_dir, says in (("full+pooler", tiny_bert, "trains the pooler already"),
                                  ("lora-r8+pooler", tiny_distilbert, "no pooler"),
                                  ("lora-r9+pooler", tiny_bert, "unknown baseline")):
        with pytest.raises(UserError) as error:
            baseline_plans([name], model_shape(model_dir, num_labels=3))
        assert says in str(error.value) and "baselines" in str(error.value)


def test_listed_pooler_choices_put_a_lora_on_the_pooler_counted_exactly_and_reloaded(tiny_bert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    hidden = shape.hidden_size
    assert shape.pooler_linears == {"pooler.dense": (hidden, hidden)}
    for modules in ({"lora": {"groups": {"query": [0, 4], "value": [0, 4]}, "variants": ["plain", "dora"]}},
                    {"ia3": {"groups": ["ffn_out"]}}):
        space = load_space(_space(tmp_path, ["full", 8, 0, 2], modules), shape)
        assert dict((d.name, d.choices) for d in space.dimensions)["pooler"] == (0, 2, 8, "full")  # cheapest first
        top = {d.name: len(d.choices) - 1 for d in space.dimensions}
        frozen = space.decode({**top, "pooler": 0})
        for index, rank in ((1, 2), (2, 8)):
            plan = space.decode({**top, "pooler": index})
            assert plan.pooler_rank == rank and not plan.pooler and plan.describe().endswith(f"+ pooler:r{rank}")
            magnitude = hidden if "lora" in plan and plan["lora"].variant == "dora" else 0
            assert space.count(plan) - space.count(frozen) == rank * 2 * hidden + magnitude
            assert Plan.from_dict(plan.to_dict()) == plan
            model = apply_plan(base_model(tiny_bert), plan, shape)
            assert {n for n, p in model.named_parameters() if p.requires_grad and "pooler" in n} and all(
                "lora_" in n for n, p in model.named_parameters() if p.requires_grad and "pooler" in n)
            reloads_identically(tiny_bert, plan, shape, tmp_path / f"reload-{len(plan.methods)}-{rank}-{plan.methods[0]}")
        assert space.decode({**top, "pooler": 3}).pooler and space.decode({**top, "pooler": 3}).pooler_rank == 0
    assert load_space(_space(tmp_path, [4, 8]), shape).smallest_plan().pooler_rank == 4  # no frozen choice listed


def test_a_lora_on_the_pooler_exports_as_one_plain_peft_lora_adapter(tiny_bert, tmp_path):
    from peft import LoraConfig, PeftModel

    shape = model_shape(tiny_bert, num_labels=3)
    plan = baseline_plan("lora-r8+pooler-r4", shape)
    assert plan == Plan.of(*baseline_plan("lora-r8", shape).parts, pooler_rank=4)
    model = apply_plan(base_model(tiny_bert), plan, shape)
    save_adapter(model, tmp_path / "adapter")
    loaded = PeftModel.from_pretrained(base_model(tiny_bert), str(tmp_path / "adapter"))
    assert isinstance(loaded.peft_config["default"], LoraConfig)
    assert any(n.endswith("pooler.dense.lora_A.default.weight") for n, _ in loaded.named_parameters())


@pytest.mark.parametrize("pooler, says", [([0, 0], "distinct"), (["half"], "full, not"), ([-1, 8], "whole numbers"),
                                          ([True, 8], "whole numbers"), ([], "a list of pooler choices")])
def test_a_list_of_pooler_choices_that_is_not_ranks_or_full_is_refused(tiny_bert, tmp_path, pooler, says):
    with pytest.raises(UserError) as error:
        load_space(_space(tmp_path, pooler), model_shape(tiny_bert, num_labels=3))
    assert "pooler" in str(error.value) and says in str(error.value)


def test_a_pooler_rank_wider_than_the_pooler_is_refused_in_a_space_and_in_a_baseline(tiny_bert, tmp_path):
    shape = model_shape(tiny_bert, num_labels=3)
    wide = shape.hidden_size + 1
    with pytest.raises(UserError) as error:
        load_space(_space(tmp_path, [0, wide]), shape)
    assert f"LoRA rank {wide} is larger than the pooler's width {shape.hidden_size}" in str(error.value)
    with pytest.raises(UserError) as error:
        baseline_plans([f"ia3+pooler-r{wide}"], shape)
    assert "baselines" in str(error.value) and f"at most {shape.hidden_size}" in str(error.value)
    plans = baseline_plans(["ia3+pooler-r4"], shape)
    assert count_trainable(plans["ia3+pooler-r4"], shape) - count_trainable(baseline_plan("ia3", shape), shape) == 4 * 2 * shape.hidden_size


def test_a_lora_goes_on_a_pooler_that_is_itself_a_linear_layer(tmp_path_factory, tmp_path):
    """BigBird's pooler is one Linear, not a module holding a ``dense`` one as BERT's: a LoRA on it was counted and
    never put there."""
    from transformers import BigBirdConfig

    from conftest import tiny_model

    path = tiny_model(tmp_path_factory, "tiny-big-bird", BigBirdConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128))
    shape = model_shape(path, num_labels=3)
    assert shape.pooler_linears == {"pooler": (32, 32)}
    plan = baseline_plans(["lora-r8+pooler-r8"], shape)["lora-r8+pooler-r8"]
    reloads_identically(path, plan, shape, tmp_path / "pooler-lora")  # counts the pooler's LoRA as peft trains it
