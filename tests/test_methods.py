"""Every registered PEFT method, through its named baselines: exact counts, plans stored as JSON."""

from __future__ import annotations

import json

import pytest

from autopeft.workers.build import apply_plan, count_trainable, peft_configs
from autopeft.workers.methods import METHODS, baseline_plan, every_baseline, searchable
from autopeft.workers.models import model_shape
from autopeft.workers.plan import Plan


def _base(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, ignore_mismatched_sizes=True)


@pytest.mark.parametrize("name", sorted(every_baseline()))
def test_every_baseline_counts_what_peft_trains_and_survives_json(tiny_bert, name):
    shape = model_shape(tiny_bert, 2)
    plan = baseline_plan(name, shape)
    model = apply_plan(_base(tiny_bert), plan, shape)
    assert count_trainable(plan, shape) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert plan.describe() and plan.describe() != "no adapter"


def test_every_method_is_a_baseline_and_every_searchable_method_has_a_space_entry():
    owners = {m.name for m in every_baseline().values()}
    assert owners == set(METHODS) - {"per_group"}  # the per-group choice decodes into other methods' parts
    assert set(searchable()) == {n for n, m in METHODS.items() if m.space is not None} == set(METHODS) - {"full", "adalora"}


def test_serial_and_parallel_adapters_share_one_peft_config(tiny_bert):
    shape = model_shape(tiny_bert, 2)
    plan = Plan.of(*baseline_plan("pfeiffer", shape).parts, *baseline_plan("parallel", shape).parts)
    assert plan.methods == ("serial", "parallel")
    configs = peft_configs(plan, shape)
    assert [c.peft_type.value for c in configs] == ["BOTTLENECK"]
    assert configs[0].serial_ffn and configs[0].parallel_ffn


def test_a_family_without_bert_blocks_takes_only_the_methods_that_fit(tiny_distilbert):
    family = model_shape(tiny_distilbert, 2).family
    assert set(METHODS) - {n for n, m in METHODS.items() if m.fits(family)} == {"serial", "parallel", "prefix"}
