"""The parameter count known before training equals what peft trains after wrapping."""

from __future__ import annotations

import copy
import random

import pytest

from autopeft.space import load_space
from workers.models import model_shape, resolve_model
from workers.plan import apply_plan, count_trainable


def _random_point(space, rng):
    return {d.name: rng.randrange(len(d.choices)) for d in space.dimensions}


def _check_many_points(model_dir: str, n_points: int, seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    shape = model_shape(model_dir, num_labels=3)
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model(model_dir), num_labels=3, ignore_mismatched_sizes=True
    )
    assert shape.base_params == sum(p.numel() for p in base.parameters())
    space = load_space("lora", shape)
    rng = random.Random(seed)
    checked = 0
    while checked < n_points:
        plan = space.decode(_random_point(space, rng))
        if plan.is_empty:
            continue
        model = apply_plan(copy.deepcopy(base), plan, shape)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert count_trainable(plan, shape) == trainable, plan.describe()
        checked += 1


def test_count_matches_peft_on_tiny_bert(tiny_bert):
    _check_many_points(tiny_bert, 40)


def test_count_matches_peft_on_tiny_distilbert(tiny_distilbert):
    _check_many_points(tiny_distilbert, 40)


@pytest.mark.integration
def test_count_matches_peft_on_minilm():
    _check_many_points("minilm-l6", 15)


def test_largest_plan_counts_every_group_on_every_layer(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=2)
    space = load_space("lora", shape)
    plan = space.largest_plan()
    hidden, inner = 32, 64
    per_layer = 16 * (4 * (hidden + hidden) + (hidden + inner) + (inner + hidden))
    assert count_trainable(plan, shape) == 2 * per_layer + (hidden * 2 + 2)
