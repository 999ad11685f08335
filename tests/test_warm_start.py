"""Warm start: an earlier front, mapped onto a new space and model depth, opens the initial design."""

from __future__ import annotations

import optuna
import pytest

from autopeft.api import submit
from autopeft.errors import UserError
from autopeft.job.load import load_job
from autopeft.optimize.warm_start import map_params, warm_points
from autopeft.record.pareto import pareto_front
from autopeft.record.study import StudyRecord
from autopeft.run.prepare import prepare
from conftest import TINY_FIDELITY, write_job


def test_layer_bits_map_by_relative_depth_from_deeper_and_shallower_models():
    six = {"lora.query.rank": 3, **{f"lora.layer.{i}": int(i >= 3) for i in range(6)}}  # the upper half adapted
    names = ["lora.query.rank", *[f"lora.layer.{j}" for j in range(12)]]
    twelve = map_params(six, names, [5] + [2] * 12)
    assert twelve["lora.query.rank"] == 3
    assert [twelve[f"lora.layer.{j}"] for j in range(12)] == [0] * 6 + [1] * 6
    names = ["lora.query.rank", "lora.layer.0", "lora.layer.1"]
    assert map_params(six, names, [5, 2, 2]) == {"lora.query.rank": 3, "lora.layer.0": 0, "lora.layer.1": 1}
    thirty = map_params({"layer.0": 1, "layer.1": 0, "layer.2": 1}, [f"layer.{j}" for j in range(30)], [2] * 30)
    assert [thirty[f"layer.{j}"] for j in range(30)] == [1] * 10 + [0] * 10 + [1] * 10


def test_choices_are_kept_clipped_or_middle_where_the_earlier_space_lacks_a_dimension():
    mapped = map_params({"lora.query.rank": 4, "ia3": 1}, ["lora.query.rank", "lora.value.rank", "learning_rate"], [3, 5, 4])
    assert mapped == {"lora.query.rank": 2, "lora.value.rank": 2, "learning_rate": 1}


def tiny_job(directory, model, reviews_csv, **overrides):
    fields = dict(model=model, task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment",
                                     "validation_size": 100},
                  fidelity=TINY_FIDELITY, objectives={"quality_floor": 0.0}, budget={"trials": 3, "parallel": 1},
                  optimizer={"sampler": "random"})
    fields.update(overrides)
    return load_job(write_job(directory, **fields))


def test_a_search_on_a_deeper_model_starts_from_an_earlier_front_mapped_layer_by_layer(
        tmp_path, tiny_bert, tiny_distilbert, reviews_csv, ray_local):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    earlier = tiny_job(tmp_path / "a", tiny_bert, reviews_csv, name="earlier")  # 2 layers
    submit(earlier, progress=False)
    record = StudyRecord.load(earlier)
    smallest = record.study.trials[pareto_front(record.finished_points())[0].trial].params
    job = tiny_job(tmp_path / "b", tiny_distilbert, reviews_csv, name="later", budget={"trials": 4, "parallel": 1},
                   optimizer={"sampler": "autopeft", "n_startup_trials": 3, "warm_start": "../a/run"})  # 3 layers
    summary = submit(job, progress=False)
    assert summary.finished == 4

    expected = prepare(job).warm_start
    later = StudyRecord.load(job).study.trials
    assert 1 <= len(expected) <= 3
    assert [t.params for t in later[: len(expected)]] == expected  # the warm points are the first trials, in order
    first = later[0].params
    assert all(first[k] == v for k, v in smallest.items() if "layer." not in k)
    # layer 0 of 3 reads layer 0 of 2; layer 1 reads layer 1 (1.5 x 2/3 = 1); layer 2 reads layer 1
    assert [first[f"layer.{j}"] for j in range(3)] == [smallest["layer.0"], smallest["layer.1"],
                                                  smallest["layer.1"]]


def test_a_warm_start_without_a_search_behind_it_is_refused(tmp_path):
    with pytest.raises(UserError, match="is neither a job file, a run directory nor a study database"):
        warm_points(tmp_path / "nothing", ["lora.query.rank"], [3], 5)
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="x", storage=storage, directions=["maximize", "minimize"])
    with pytest.raises(UserError, match="has not started"):
        warm_points(tmp_path / "empty.db", ["lora.query.rank"], [3], 5)
