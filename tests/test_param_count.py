"""The parameter count known before training equals what peft trains after wrapping, for every shipped space."""

from __future__ import annotations

import random

import pytest
import torch
import yaml

from autopeft.errors import UserError
from autopeft.space.file import builtin_spaces
from autopeft.space.search_space import load_space
from autopeft.workers.build import apply_plan, count_trainable, load_adapter, save_adapter
from autopeft.workers.methods.full import Full
from autopeft.workers.models import model_shape
from autopeft.workers.plan import Plan
from conftest import base_model, check_counts, random_point


@pytest.mark.parametrize("space_name", ["lora", "autopeft", "mixed"])
def test_count_matches_peft_on_tiny_bert(tiny_bert, space_name):
    check_counts(tiny_bert, space_name, 25)


def test_count_matches_peft_on_tiny_distilbert(tiny_distilbert):
    check_counts(tiny_distilbert, "lora", 25)


def test_count_matches_peft_on_tiny_mpnet_with_parallel_adapters(tiny_mpnet, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "mpnet", "layers": "per_module", "modules": {
        "lora": {"groups": {"query": [0, 4], "attention_output": [0, 2], "ffn_in": [0, 8]}},
        "ia3": {"groups": ["ffn_out"]}, "parallel": {"sizes": [0, 4, 8]}}}))
    check_counts(tiny_mpnet, str(path), 12)


def test_adapters_and_prefixes_name_the_blocks_a_family_lacks(tiny_distilbert):
    with pytest.raises(UserError, match="do not fit distilbert models .*it needs the attention.*the FFN.*the self-attention module"):
        load_space("mixed", model_shape(tiny_distilbert, 2))


@pytest.mark.integration
@pytest.mark.parametrize("space_name", ["lora", "autopeft", "mixed"])
def test_count_matches_peft_on_minilm(space_name):
    check_counts("minilm-l6", space_name, 8)


def test_every_shipped_space_is_tested():
    assert builtin_spaces() == ["autopeft", "catalogue", "decoder", "lora", "mixed"]  # catalogue: tests/test_catalogue.py


def test_largest_lora_plan_counts_every_group_on_every_layer(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=2)
    plan = load_space("lora", shape).largest_plan()
    hidden, inner = 32, 64
    per_layer = 16 * (4 * (hidden + hidden) + (hidden + inner) + (inner + hidden))
    assert count_trainable(plan, shape) == 2 * per_layer + (hidden * 2 + 2)


@pytest.mark.parametrize("seed", range(6))
def test_saved_plans_reload_with_identical_outputs(tiny_bert, tmp_path, seed):
    shape = model_shape(tiny_bert, num_labels=3)
    space = load_space("mixed", shape)
    rng = random.Random(seed)
    plan = Plan.of(Full()) if seed == 5 else space.decode(random_point(space, rng))
    while plan.is_empty:
        plan = space.decode(random_point(space, rng))
    torch.manual_seed(seed)
    model = apply_plan(base_model(tiny_bert), plan, shape)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # as if trained: every trainable tensor moves away from its start
                parameter.add_(torch.randn_like(parameter) * 0.05)
    inputs = {"input_ids": torch.randint(1, 1000, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    inputs["attention_mask"][2, 6:] = 0
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    save_adapter(model, tmp_path)
    reloaded = load_adapter(base_model(tiny_bert), tmp_path)
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, expected, atol=1e-6), plan.describe()
    untouched = base_model(tiny_bert).eval()
    with torch.no_grad():
        assert not torch.allclose(untouched(**inputs).logits, expected, atol=1e-4)
