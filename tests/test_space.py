import pytest
import yaml

from autopeft.errors import UserError
from autopeft.space.search_space import load_space
from autopeft.workers.models import model_shape


@pytest.fixture()
def shape(tiny_bert):
    return model_shape(tiny_bert, num_labels=2)


def write_space(tmp_path, data) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


GROUPS = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")


def test_shipped_lora_space_has_a_rank_per_group_and_layer_half_and_a_bit_per_layer(shape):
    space = load_space("lora", shape)
    names = [d.name for d in space.dimensions]
    assert names[:12] == [f"lora.{g}.rank.{k}" for g in GROUPS for k in (0, 1)]
    assert names[12:] == ["layer.0", "layer.1"]


def test_the_learning_rate_is_searched_around_the_jobs_unless_the_space_fixes_it(shape, tmp_path):
    space = load_space("lora", shape, learning_rate=2e-3)
    rates = {d.name: d.choices for d in space.dimensions}["learning_rate"]
    assert rates == (6.67e-4, 2e-3, 6e-3)
    point = {d.name: 1 for d in space.dimensions}
    plan = space.decode({**point, "learning_rate": 2})
    assert plan.learning_rate == 6e-3 and plan.describe().endswith(" lr 0.006")
    entry = {"name": "s", "modules": {"lora": {"groups": {"query": [0, 8]}}}}
    fixed = load_space(write_space(tmp_path, {**entry, "learning_rate": "fixed"}), shape, learning_rate=2e-3)
    assert "learning_rate" not in {d.name for d in fixed.dimensions}
    assert fixed.decode({d.name: 1 for d in fixed.dimensions}).learning_rate is None  # trains at the job's rate
    listed = load_space(write_space(tmp_path, {**entry, "learning_rate": [1e-3, 1e-4]}), shape, learning_rate=2e-3)
    assert {d.name: d.choices for d in listed.dimensions}["learning_rate"] == (1e-4, 1e-3)


def test_a_named_baseline_is_found_as_a_point_where_the_space_holds_its_plan(shape, tmp_path):
    from autopeft.workers.methods.base import baseline_plan

    lora_r8 = baseline_plan("lora-r8", shape)
    space = load_space("lora", shape, learning_rate=2e-3)  # ranks per half of the layers: two choices per group make it
    point = space.point_of(lora_r8, 2e-3)
    plan = space.decode(point)
    assert plan.describe() == "query:r8@0 query:r8@1 value:r8@0 value:r8@1 lr 0.002"
    assert space.count(plan) == space.count(lora_r8)
    odd = 1.2345e-3  # a job's rate of more significant figures than the space shows its others with
    assert load_space("lora", shape, learning_rate=odd).point_of(lora_r8, odd) is not None
    assert load_space("mixed", shape, learning_rate=2e-3).point_of(baseline_plan("ia3", shape), 2e-3) is None  # IA3 on key, ffn_out
    entry = {"name": "s", "modules": {"lora": {"groups": {"query": [0, 8], "value": [0, 8]}}}, "layers": "all"}
    slow = load_space(write_space(tmp_path, {**entry, "learning_rate": [1e-4, 1e-3]}), shape, learning_rate=2e-3)
    assert slow.point_of(lora_r8, 2e-3) is None  # lora-r8 trains at the job's rate, which the space does not hold
    assert slow.point_of(lora_r8, 1e-3) is not None


def test_a_plan_of_the_space_is_found_even_where_no_single_change_leads_to_it():
    import random

    from autopeft.workers.models import model_shape as shape_of

    rate = 2e-4
    space = load_space("lora", shape_of("minilm-l6", 2), learning_rate=rate)
    # query r8 on layers 1 and 4 of a plan on layers 1 and 4 only: from the largest point, taking the ranks of
    # layers 0-2 down first leaves layers 0 and 2 on with nothing in them, and no one change then gets fewer wrong
    ranks = {"query": (3, 3), "key": (0, 2), "value": (4, 3), "attention_output": (3, 2), "ffn_in": (3, 2), "ffn_out": (4, 1)}
    point = {f"lora.{g}.rank.{h}": r[h] for g, r in ranks.items() for h in (0, 1)}
    point.update({"learning_rate": 2, **{f"layer.{i}": int(i in (1, 4)) for i in range(6)}})
    plan = space.decode(point)
    found = space.point_of(plan, rate)
    assert found is not None and space.decode(found).describe() == plan.describe()

    mixed = load_space("mixed", shape_of("minilm-l6", 2), learning_rate=rate)
    rng = random.Random(1)
    for _ in range(12):  # random plans of a space of 38 dimensions and four methods
        plan = mixed.decode({d.name: rng.randrange(len(d.choices)) for d in mixed.dimensions})
        found = mixed.point_of(plan, rate)
        assert found is not None and mixed.decode(found).describe() == plan.describe(), plan.describe()
        assert mixed.count(mixed.decode(found)) == mixed.count(plan)


def test_decode_turns_ranks_and_bits_into_a_plan(shape):
    space = load_space("lora", shape)
    point = {d.name: 0 for d in space.dimensions}
    point.update({"lora.query.rank.1": 3, "lora.value.rank.1": 1, "lora.value.rank.0": 4, "layer.1": 1})
    plan = space.decode(point)
    active = {t.group: t for t in plan['lora'].targets}
    assert set(active) == {"query", "value"}  # value's rank for layer 0 is moot: layer 0 is off
    assert active["query"].rank == 8 and active["query"].alpha == 16.0 and active["query"].layers == (1,)
    assert active["value"].rank == 2
    assert plan.describe() == "query:r8 value:r2 @ layers 1"
    assert space.decode({**point, "layer.1": 0}).is_empty
    both = space.decode({**point, "layer.0": 1})
    assert {(t.group, t.rank, t.layers) for t in both['lora'].targets} == {
        ("query", 8, (1,)), ("value", 16, (0,)), ("value", 2, (1,))}


def test_autopeft_space_is_the_papers_sizes_with_one_shared_bit_per_layer():
    from autopeft.workers.models import model_shape as shape_of

    space = load_space("autopeft", shape_of("minilm-l6", 2))
    by_name = {d.name: d.choices for d in space.dimensions}
    for module in ("serial", "parallel", "prefix"):
        assert by_name[f"{module}.size"] == (0, 1, 2, 3, 6, 12, 24, 48, 96, 192, 384)
    assert [n for n in by_name if n.startswith("layer.")] == [f"layer.{i}" for i in range(6)]
    point = {**{d.name: 0 for d in space.dimensions}, "serial.size": 6, "prefix.size": 1, "layer.2": 1, "layer.4": 1}
    plan = space.decode(point)
    assert plan["serial"].ffn == ((2, 24), (4, 24)) and plan["prefix"].lengths == ((2, 1), (4, 1)) and "parallel" not in plan
    assert plan.methods == ("serial", "prefix")


def test_mixed_space_places_each_module_on_its_own_layers():
    from autopeft.workers.models import model_shape as shape_of

    space = load_space("mixed", shape_of("minilm-l6", 2))
    names = {d.name for d in space.dimensions}
    for module in ("lora", "ia3", "serial", "parallel", "prefix"):
        assert {f"{module}.layer.0", f"{module}.layer.1"} <= names
    point = {d.name: len(d.choices) - 1 for d in space.dimensions}
    point.update({"serial.layer.0": 0, "prefix.layer.1": 0})
    plan = space.decode(point)
    assert plan.methods == ("lora", "ia3", "serial", "parallel", "prefix")
    everywhere = tuple(range(6))
    assert plan["serial"].ffn == tuple((i, 64) for i in everywhere if i != 0)
    assert plan["prefix"].lengths == tuple((i, 20) for i in everywhere if i != 1)
    assert plan["parallel"].ffn == tuple((i, 64) for i in everywhere)


def test_alpha_and_learning_rate_dimensions(tmp_path, shape):
    path = write_space(tmp_path, {
        "name": "x", "modules": {"lora": {"groups": {"query": [0, 4], "value": [4]}, "alpha": [8, 32]}},
        "layers": "all", "learning_rate": [1e-4, 1e-3],
    })
    space = load_space(path, shape)
    assert [d.name for d in space.dimensions] == ["lora.query.rank", "lora.alpha", "learning_rate"]
    plan = space.decode({"lora.query.rank": 1, "lora.alpha": 1, "learning_rate": 0})
    assert plan.learning_rate == 1e-4
    assert {(t.group, t.rank, t.alpha, t.layers) for t in plan['lora'].targets} == {
        ("query", 4, 32.0, (0, 1)), ("value", 4, 32.0, (0, 1))}


@pytest.mark.parametrize("data, field, words", [
    ({"name": "x", "modules": {"adapter": {"groups": {"query": [0, 4]}}}}, "modules", "unknown module 'adapter'"),
    ({"name": "x", "modules": {"lora": {"groups": {"querry": [0, 4]}}}}, "modules.lora.groups", "unknown module group 'querry'"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 64]}}}}, "modules.lora.groups.query", "rank 64 is larger than the layer width 32"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [4]}}}, "layers": "all"}, "space.yaml", "no dimension"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0]}}}}, "modules.lora.groups", "every rank is 0"),
    ({"name": "x", "modules": {}}, "modules", "the space names no module"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 4]}}}, "layer": "all"}, "layer", "unknown field 'layer'"),
    ("", "space.yaml", "empty"),
    ({"name": "x", "modules": {"serial": {"sizes": [0, 64]}}}, "modules.serial.sizes", "size 64 is larger than the model width 32"),
    ({"name": "x", "modules": {"serial": {"sizes": [0, 8]}}, "layers": [0, 5]}, "layers", "layer 5 is outside the model"),
    ({"name": "x", "modules": {"lora": {"groups": {"key": [0, 4]}}, "ia3": {"groups": ["key"]}}}, "modules.ia3.groups", "cannot both adapt 'key'"),
    ({"name": "x", "modules": {"prefix": {"sizes": [0, 8], "size_fractions": [0.5]}}}, "modules.prefix", "exactly one of"),
    # a field of several kinds: the kinds' names stay out of the path, and the list's bad item is the one named
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 4]}, "alpha": [8, "x"]}}}, "modules.lora.alpha.1", "(it is 'x')"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 4]}}}, "layers": "some"}, "layers",
     "'per_layer', 'per_module' or 'all' (it is 'some')"),
])
def test_bad_space_files_name_the_entry(tmp_path, shape, data, field, words):
    with pytest.raises(UserError) as info:
        load_space(write_space(tmp_path, data), shape)
    assert field in info.value.field
    assert "[" not in info.value.field  # no pydantic kind such as list[float] in the path
    assert words in info.value.problem
