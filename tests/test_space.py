import pytest
import yaml

from autopeft.errors import UserError
from autopeft.space import load_space
from workers.models import model_shape


@pytest.fixture()
def shape(tiny_bert):
    return model_shape(tiny_bert, num_labels=2)


def write_space(tmp_path, data) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_shipped_lora_space_has_a_rank_per_group_and_a_bit_per_layer(shape):
    space = load_space("lora", shape)
    names = [d.name for d in space.dimensions]
    assert names[:6] == [f"lora.{g}.rank" for g in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out")]
    assert names[6:] == ["layer.0", "layer.1"]


def test_decode_turns_ranks_and_bits_into_a_plan(shape):
    space = load_space("lora", shape)
    point = {d.name: 0 for d in space.dimensions}
    point.update({"lora.query.rank": 3, "lora.value.rank": 1, "layer.1": 1})
    plan = space.decode(point)
    active = {t.group: t for t in plan.active_lora()}
    assert set(active) == {"query", "value"}
    assert active["query"].rank == 8 and active["query"].alpha == 16.0 and active["query"].layers == (1,)
    assert active["value"].rank == 2
    assert plan.describe() == "query:r8 value:r2 @ layers 1"
    assert space.decode({**point, "layer.1": 0}).is_empty


def test_alpha_and_learning_rate_dimensions(tmp_path, shape):
    path = write_space(tmp_path, {
        "name": "x", "modules": {"lora": {"groups": {"query": [0, 4], "value": [4]}, "alpha": [8, 32]}},
        "layers": "all", "learning_rate": [1e-4, 1e-3],
    })
    space = load_space(path, shape)
    assert [d.name for d in space.dimensions] == ["lora.query.rank", "lora.alpha", "learning_rate"]
    plan = space.decode({"lora.query.rank": 1, "lora.alpha": 1, "learning_rate": 0})
    assert plan.learning_rate == 1e-4
    assert {(t.group, t.rank, t.alpha, t.layers) for t in plan.active_lora()} == {
        ("query", 4, 32.0, (0, 1)), ("value", 4, 32.0, (0, 1))}


@pytest.mark.parametrize("data, field, words", [
    ({"name": "x", "modules": {"adapter": {"groups": {"query": [0, 4]}}}}, "modules", "unknown module 'adapter'"),
    ({"name": "x", "modules": {"lora": {"groups": {"querry": [0, 4]}}}}, "modules.lora.groups", "unknown module group 'querry'"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 64]}}}}, "modules.lora.groups.query", "rank 64 is larger than the layer width 32"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [4]}}}, "layers": "all"}, "space.yaml", "no dimension"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0]}}}}, "modules.lora.groups", "every rank is 0"),
    ({"name": "x", "modules": {}}, "modules", "at least 1 item"),
    ({"name": "x", "modules": {"lora": {"groups": {"query": [0, 4]}}}, "layer": "all"}, "layer", "unknown field 'layer'"),
    ("", "space.yaml", "empty"),
])
def test_bad_space_files_name_the_entry(tmp_path, shape, data, field, words):
    with pytest.raises(UserError) as info:
        load_space(write_space(tmp_path, data), shape)
    assert field in info.value.field
    assert words in info.value.problem
