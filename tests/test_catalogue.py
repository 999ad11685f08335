"""peft's method catalogue: LoRA variants, LoHa, LoKr, VeRA and OFT, alone as named baselines and
chosen per module group by the ``catalogue`` space, on every supported family: exact counts, save
and reload, the learning rate each method trains at, and what does not fit."""

from __future__ import annotations

import pytest
import yaml

from autopeft.errors import UserError
from autopeft.space.search_space import load_space
from autopeft.workers.build import apply_plan, count_trainable, parameter_groups
from autopeft.workers.methods import baseline_plan, method
from autopeft.workers.methods.ranked import RankTarget
from autopeft.workers.models import model_shape
from autopeft.workers.plan import Plan
from conftest import base_model, check_counts, reloads_identically, tiny_model
from test_families import DECODERS

NEW_BASELINES = ["dora-r8", "loha-r8", "lokr-r8", "vera-r256", "oft", "adalora"]
ENCODERS = ["tiny_bert", "tiny_distilbert", "tiny_mpnet", "tiny_deberta", "tiny_modernbert"]


@pytest.fixture(scope="module", params=ENCODERS + sorted(DECODERS))
def model_dir(request, tmp_path_factory) -> str:
    if request.param in ENCODERS:
        return request.getfixturevalue(request.param)
    import transformers

    return tiny_model(tmp_path_factory, f"tiny-{request.param}", DECODERS[request.param](transformers))


def test_each_new_baseline_counts_what_peft_trains_and_reloads_with_identical_logits(model_dir, tmp_path):
    shape = model_shape(model_dir, num_labels=3)
    ran = []
    for name in NEW_BASELINES:
        plan = baseline_plan(name, shape)
        if all(method(m).fits(shape.family, plan[m]) for m in plan.methods):
            reloads_identically(model_dir, plan, shape, tmp_path / name)
            ran.append(name)
    linear_only = {"loha-r8", "lokr-r8", "oft"}  # peft wraps torch Linear layers only, not GPT-2's Conv1D
    assert ran == [n for n in NEW_BASELINES if not (shape.family.fan_in_fan_out and n in linear_only)]
    if "query" not in shape.family.groups:  # fused query, key and value: the baselines adapt the fused projection
        for name in ran:
            plan = baseline_plan(name, shape)
            assert set().union(*(method(m).part_groups(plan[m]) for m in plan.methods)) == {"query_key_value"}, name


def test_ln_tuning_bitfit_and_prompts_count_what_peft_trains_and_reload_alone_and_beside_other_methods(model_dir, tmp_path):
    shape = model_shape(model_dir, num_labels=3)
    assert shape.norms and all(count > 0 for count in shape.norms.values())
    reloads_identically(model_dir, baseline_plan("ln-tuning", shape), shape, tmp_path / "ln")
    reloads_identically(model_dir, baseline_plan("prompt-20", shape), shape, tmp_path / "prompt")
    bitfit = baseline_plan("bitfit", shape)
    assert method("bitfit").fits(shape.family, bitfit["bitfit"]) == bool(shape.group_biases)
    if shape.group_biases:
        reloads_identically(model_dir, bitfit, shape, tmp_path / "bitfit")
    biased = [g for g in shape.family.groups if g in shape.group_biases][:1]
    lora = [g for g in shape.family.groups if g not in biased][:2]
    modules = {"ln_tuning": {}, "lora": {"groups": {g: [0, 4] for g in lora}}}
    if biased:
        modules["bitfit"] = {"groups": biased}
    if method("parallel").fits(shape.family):  # a bottleneck adapter around the block that holds a norm
        modules["parallel"] = {"sizes": [0, 4]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "modules": modules, "layers": "per_module"}))
    check_counts(model_dir, str(path), 6)
    reloads_identically(model_dir, load_space(str(path), shape).largest_plan(), shape, tmp_path / "together")


def test_the_catalogue_space_counts_exactly_and_its_largest_plan_reloads(model_dir, tmp_path):
    shape = model_shape(model_dir, num_labels=3)
    check_counts(model_dir, "catalogue", 6)
    space = load_space("catalogue", shape)
    largest = space.largest_plan()
    reloads_identically(model_dir, largest, shape, tmp_path / "largest")
    chosen = {d.name: d.choices for d in space.dimensions if d.name.startswith("per_group.") and "variant" not in d.name}
    assert set(chosen) >= {f"per_group.{g}" for g in shape.family.groups}
    for options in chosen.values():
        assert options[0] == "off"
        if shape.family.fan_in_fan_out:
            assert not any(o.startswith(("loha", "lokr", "oft")) for o in options)
        else:
            assert {o.split(":")[0] for o in options[1:]} == {"lora", "loha", "lokr", "vera", "oft"}


@pytest.mark.parametrize("variant", ["pissa", "rslora"])
def test_lora_variants_count_exactly_and_reload_alone_and_beside_other_methods(model_dir, tmp_path, variant):
    shape = model_shape(model_dir, num_labels=3)
    groups = list(shape.family.groups)
    last = shape.num_layers - 1
    alone = method("lora").part(tuple(RankTarget(g, 4, 8.0, (0, last)) for g in groups[:2]), variant)
    reloads_identically(model_dir, Plan.of(alone, **shape.pooler_default), shape, tmp_path / "alone")
    beside = Plan.of(alone, method("vera").part((groups[-1],), 16, (last,)), **shape.pooler_default)
    reloads_identically(model_dir, beside, shape, tmp_path / "beside")


def test_a_point_that_mixes_methods_per_group_becomes_one_plan_with_each(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=3)
    space = load_space("catalogue", shape)
    wanted = {"per_group.query": "lora:8", "per_group.value": "vera:256", "per_group.key": "oft:16",
              "per_group.ffn_in": "loha:4", "per_group.ffn_out": "lokr:4", "per_group.attention_output": "off",
              "per_group.lora_variant": "dora"}
    point = {d.name: d.choices.index(wanted[d.name]) if d.name in wanted else len(d.choices) - 1 for d in space.dimensions}
    plan = space.decode(point)
    assert set(plan.methods) == {"lora", "vera", "oft", "loha", "lokr"}
    assert plan["lora"].variant == "dora" and [t.group for t in plan["lora"].targets] == ["query"]
    assert plan["vera"].groups == ("value",) and plan["oft"].size == 16
    model = apply_plan(base_model(tiny_bert), plan, shape)
    assert count_trainable(plan, shape) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_each_method_trains_at_its_own_rate(tiny_bert):
    shape = model_shape(tiny_bert, num_labels=3)
    for name, scale, marker in [("vera-r256", 10.0, "vera_lambda"), ("ia3", 10.0, "ia3_"), ("prefix-10", 10.0, "kv_prefix_"),
                                ("lora-r8", 1.0, "lora_"), ("full", 0.05, "")]:
        plan = baseline_plan(name, shape)
        model = apply_plan(base_model(tiny_bert), plan, shape)
        groups = parameter_groups(model, plan, 2e-3)
        rates = {id(p): g["lr"] for g in groups for p in g["params"]}
        assert len(rates) == sum(1 for p in model.parameters() if p.requires_grad)
        for parameter_name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            in_method = marker in parameter_name if name != "full" else True
            assert rates[id(parameter)] == pytest.approx(2e-3 * scale if in_method else 2e-3), (name, parameter_name)


def _space_file(tmp_path, modules: dict) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "modules": modules, "layers": "all"}))
    return str(path)


def test_a_method_that_does_not_fit_is_named_with_what_fits(tmp_path, tiny_bert, tmp_path_factory):
    import transformers

    gpt2 = tiny_model(tmp_path_factory, "tiny-gpt2-unfit", DECODERS["gpt2"](transformers))
    with pytest.raises(UserError, match="oft: peft's OFT wraps torch Linear layers, and gpt2 models use Conv1D") as exc:
        load_space(_space_file(tmp_path, {"oft": {"groups": ["query_key_value"], "sizes": [16]}}), model_shape(gpt2, 2))
    assert "vera" in exc.value.fix and "lora" in exc.value.fix and "loha" not in exc.value.fix
    with pytest.raises(UserError, match="block size 24 does not divide the input width 32 of 'query'"):
        load_space(_space_file(tmp_path, {"oft": {"groups": ["query"], "sizes": [24]}}), model_shape(tiny_bert, 2))
    with pytest.raises(UserError, match="'ia3' cannot be chosen per module group; use some of lora, loha, lokr, vera, oft"):
        load_space(_space_file(tmp_path, {"per_group": {"methods": {"ia3": [1]}}}), model_shape(tiny_bert, 2))
    with pytest.raises(UserError, match="query layers of llama models have no bias. Fix: use groups with a bias: this model has none"):
        llama = tiny_model(tmp_path_factory, "tiny-llama-unbiased", DECODERS["llama"](transformers))
        load_space(_space_file(tmp_path, {"bitfit": {"groups": ["query"]}}), model_shape(llama, 2))
    with pytest.raises(UserError, match="prompt tuning cannot share a model with other methods"):
        load_space(_space_file(tmp_path, {"prompt": {"sizes": [10]}, "ia3": {}}), model_shape(tiny_bert, 2))
    with pytest.raises(UserError, match="per-group choice and IA3 cannot both adapt 'key'"):
        load_space(_space_file(tmp_path, {"per_group": {"methods": {"lora": [4]}}, "ia3": {"groups": ["key"]}}),
                   model_shape(tiny_bert, 2))
    with pytest.raises(UserError, match="method 'vera' takes one size here"):
        load_space(_space_file(tmp_path, {"per_group": {"methods": {"vera": [64, 256]}}}), model_shape(tiny_bert, 2))


def test_a_catalogue_search_runs_every_new_baseline_records_the_choices_and_exports_a_loadable_adapter(
        tmp_path, tiny_bert, reviews_csv, ray_local):
    from autopeft import load_adapter
    from autopeft.api import export, submit
    from test_export import _validation_accuracy
    from test_search import runs_of, tiny_job

    baselines = [*NEW_BASELINES, "bitfit", "ln-tuning", "prompt-20"]
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, search_space="catalogue", baselines=baselines)
    summary = submit(job, progress=False)
    assert summary.finished == 4 and summary.failed == 0
    assert set(summary.baselines) == set(baselines)  # every one trained and was evaluated
    assert summary.baselines["vera-r256"].params == 2 * 2 * (256 + 32) + 32 * 2 + 2  # 2 layers x q,v, plus the head
    _, _, children = runs_of(job)
    searched = [r for r in children if "per_group.query" in r.data.params]
    assert len(searched) == 4
    assert all(r.data.params["per_group.query"].split(":")[0] in {"off", "lora", "loha", "lokr", "vera", "oft"} for r in searched)
    exported = export(job, "best", tmp_path / "out")  # one peft adapter, or several methods in autopeft's composite format
    loaded = load_adapter(base_model(tiny_bert, 2), tmp_path / "out")
    assert _validation_accuracy(loaded, job, tiny_bert) == pytest.approx(exported.point.quality, abs=1.5 / job.fidelity.eval_examples)


def test_adalora_reallocates_its_ranks_while_it_trains_and_saves_the_budget_it_kept(tiny_bert, reviews_csv):
    import json

    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    data = load_task_data(TaskSpec(train_file=reviews_csv, text_columns=["review"], label_column="sentiment"))
    shape = model_shape(tiny_bert, 2)
    plan = baseline_plan("adalora", shape)
    fidelity = Fidelity(train_examples=160, eval_examples=40, batch_size=8, max_seq_length=32)
    result = run_trial(TrialRequest(None, plan, tiny_bert, 2, "accuracy", fidelity, seed=0, baseline="adalora"), data)
    assert result.metrics["train_steps"] == 20
    config = json.loads(result.adapter_files["adapter_config.json"])
    assert config["peft_type"] == "ADALORA" and config["total_step"] == 20
    kept = config["rank_pattern"]  # module -> which of its 12 ranks survived
    assert len(kept) == 4 and all(len(mask) == 12 for mask in kept.values())
    assert sum(sum(mask) for mask in kept.values()) == 8 * 4  # lora-r8's budget: rank 8 on q and v in 2 layers


def test_a_space_can_search_each_methods_learning_rate_over_its_range(tmp_path, tiny_bert):
    shape = model_shape(tiny_bert, num_labels=2)
    path = _space_file(tmp_path, {"lora": {"groups": {"query": [4]}}, "ia3": {"groups": ["key"], "optional": False}})
    spec = yaml.safe_load(open(path))
    spec["method_learning_rates"] = 3
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(spec))
    space = load_space(path, shape)
    choices = {d.name: d.choices for d in space.dimensions}
    assert choices == {"learning_rate_scale.lora": (0.25, 1.0, 4.0), "learning_rate_scale.ia3": (2.5, 10.0, 40.0)}
    plan = space.decode({"learning_rate_scale.lora": 2, "learning_rate_scale.ia3": 0})
    assert dict(plan.learning_rate_scales) == {"lora": 4.0, "ia3": 2.5}
    assert Plan.from_dict(plan.to_dict()) == plan  # stored with the trial, read back for export and resume
    model = apply_plan(base_model(tiny_bert, 2), plan, shape)
    rates = {name: g["lr"] for g in parameter_groups(model, plan, 1e-3) for p in g["params"]
             for name, q in model.named_parameters() if q is p}
    for marker, rate in (("lora_", 4e-3), ("ia3_", 2.5e-3), ("classifier", 1e-3)):
        found = [r for n, r in rates.items() if marker in n]
        assert found and found == pytest.approx([rate] * len(found)), marker


def test_every_baseline_trains_on_a_bf16_base_with_what_trains_in_fp32(model_dir):
    """``fidelity.base_dtype: bfloat16`` on every family: each baseline that fits takes two steps of autopeft's
    trainer, every trainable parameter stays fp32 and moves, and the frozen linear layers stay bf16."""
    import math

    import torch

    from autopeft.workers.methods import every_baseline
    from autopeft.workers.models import load_base, matmul_modules
    from autopeft.workers.train import train
    from autopeft.workers.trial import TrialContext
    from autopeft.workers.types import Fidelity, TaskData

    shape = model_shape(model_dir, num_labels=3)
    texts = (("a fine film, truly",), ("dreadful and long",), ("it was fine",), ("no plot at all, none",))
    data = TaskData(texts * 2, (0, 1, 2, 1) * 2, texts, (0, 1, 2, 1), ("a", "b", "c"))
    fidelity = Fidelity(train_examples=8, eval_examples=8, batch_size=4, max_seq_length=16, warmup_ratio=0.0,
                        base_dtype="bfloat16")
    trained = []
    for name in every_baseline():
        plan = baseline_plan(name, shape)
        if not all(method(m).fits(shape.family, plan[m]) for m in plan.methods):
            continue
        context = TrialContext(plan=plan, shape=shape, data=data, fidelity=fidelity, metric="accuracy", seed=0,
                               device=torch.device("cpu"), load_model=lambda: load_base(model_dir, 3, "bfloat16"))
        model = context.apply_plan()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        assert {p.dtype for p in before.values()} == {torch.float32}, name
        frozen = [m.weight for m in matmul_modules(model) if not m.weight.requires_grad]
        assert plan.full or (frozen and {p.dtype for p in frozen} == {torch.bfloat16}), name
        _, losses = train(context)
        assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), name
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
        assert moved and {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}, name
        trained.append(name)
    assert {"lora-r8", "full"} <= set(trained) and len(trained) >= 10
