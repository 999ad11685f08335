"""Warm start: an earlier front, mapped onto a new space and model depth, opens the initial design."""

from __future__ import annotations

import optuna
import pytest

from autopeft.api import submit
from autopeft.cli import main
from autopeft.errors import UserError
from autopeft.job.load import load_job
from autopeft.optimize.warm_start import map_params, shares_a_dimension, warm_points
from autopeft.record.pareto import counted, pareto_front
from autopeft.record.study import StudyRecord
from autopeft.run.prepare import prepare
from conftest import TINY_FIDELITY, write_job


def dims(names, levels):
    """Dimensions of these names, each with choices 0 to its level count - 1."""
    return [(name, tuple(range(k))) for name, k in zip(names, levels, strict=True)]


def test_layer_bits_map_by_relative_depth_from_deeper_and_shallower_models():
    six = {"lora.query.rank": 3, **{f"lora.layer.{i}": int(i >= 3) for i in range(6)}}  # the upper half adapted
    names = ["lora.query.rank", *[f"lora.layer.{j}" for j in range(12)]]
    twelve = map_params(six, dims(names, [5] + [2] * 12))
    assert twelve["lora.query.rank"] == 3
    assert [twelve[f"lora.layer.{j}"] for j in range(12)] == [0] * 6 + [1] * 6
    names = ["lora.query.rank", "lora.layer.0", "lora.layer.1"]
    assert map_params(six, dims(names, [5, 2, 2])) == {"lora.query.rank": 3, "lora.layer.0": 0, "lora.layer.1": 1}
    thirty = map_params({"layer.0": 1, "layer.1": 0, "layer.2": 1}, dims([f"layer.{j}" for j in range(30)], [2] * 30))
    assert [thirty[f"layer.{j}"] for j in range(30)] == [1] * 10 + [0] * 10 + [1] * 10


def test_choices_are_kept_clipped_off_or_middle_where_the_earlier_space_lacks_a_dimension():
    mapped = map_params({"lora.query.rank": 4, "ia3": 1}, [("lora.query.rank", (0, 4, 8)), ("lora.value.rank", (0, 2, 4, 8, 16)),
                                                           ("learning_rate", (1e-4, 3e-4, 1e-3, 3e-3))])
    assert mapped == {"lora.query.rank": 2, "lora.value.rank": 0, "learning_rate": 1}


def test_a_rank_keeps_its_value_when_the_ranks_offered_change_and_relative_choices_keep_their_position():
    earlier = {"lora.query.rank": [0, 2, 4, 8, 16], "lora.value.rank": [0, 2, 4, 8, 16], "serial.size": [0, 8, 16, 32, 64],
               "learning_rate": [0.000667, 0.002, 0.006], "pooler": [0, 8, "full"]}
    now = [("lora.query.rank", (0, 8, 16, 32, 64)), ("lora.value.rank", (0, 8, 16, 32, 64)),
           ("serial.size", (0, 12, 24, 48, 96)),  # the same fractions of a wider model: no size in common
           ("learning_rate", (6.67e-05, 0.0002, 0.0006)),  # searched around another job's rate
           ("pooler", (0, 4, 8, "full"))]
    mapped = [map_params({"lora.query.rank": q, "lora.value.rank": v, "serial.size": 2, "learning_rate": 2, "pooler": p},
                         now, earlier) for q, v, p in [(3, 4, 2), (1, 0, 1), (2, 3, 0)]]
    # rank 8 stays 8 and 16 stays 16 (not the 4th and 5th choices, 32 and 64); 2 and 4 go to the nearest rank, 8; off stays off
    assert [(m["lora.query.rank"], m["lora.value.rank"]) for m in mapped] == [(1, 2), (1, 0), (1, 1)]
    assert {m["serial.size"] for m in mapped} == {2} and {m["learning_rate"] for m in mapped} == {2}  # by position
    assert [m["pooler"] for m in mapped] == [3, 2, 0]  # "full" and 8 by value
    # the mixed space's serial sizes and prefix lengths in the autopeft space's (lists of other lengths): the nearest
    autopeft = [("serial.size", (0, 1, 2, 3, 6, 12, 24, 48, 96, 192, 384)), ("prefix.size", (0, 1, 2, 3, 6, 12, 24, 48, 96))]
    sizes = {"serial.size": [0, 8, 16, 32, 64], "prefix.size": [0, 5, 10, 20]}
    assert [tuple(map_params({"serial.size": s, "prefix.size": p}, autopeft, sizes).values()) for s, p in [(1, 2), (4, 0)]] == \
        [(4, 5), (7, 0)]  # serial 8 -> 6, prefix 10 -> 12; serial 64 -> 48, prefix off


def test_a_point_maps_between_spaces_that_block_ranks_and_place_layers_differently():
    ranks = (0, 2, 4, 8, 16)
    # the mixed space: one rank per group for all layers, bits per module; LoRA and IA3 used, serial adapters off
    mixed = {"lora.query.rank": 2, "lora.value.rank": 0, "ia3": 1, "serial.size": 0, "learning_rate": 2,
             **{f"lora.layer.{i}": int(i in (0, 1)) for i in range(6)}, **{f"ia3.layer.{i}": int(i == 5) for i in range(6)},
             **{f"serial.layer.{i}": 1 for i in range(6)}}
    mixed_choices = {"lora.query.rank": [0, 4, 8, 16], "lora.value.rank": [0, 4, 8, 16], "ia3": [0, 1],
                     "serial.size": [0, 8, 16, 32, 64], "learning_rate": [0.000667, 0.002, 0.006]}
    # the lora space on a 12-layer model: ranks per half of the layers, one bit per layer for every module
    lora = [*[(f"lora.{g}.rank.{k}", ranks) for g in ("query", "value", "ffn_out") for k in (0, 1)],
            ("learning_rate", (0.000667, 0.002, 0.006)), *[(f"layer.{j}", (0, 1)) for j in range(12)]]
    mapped = map_params(mixed, lora, mixed_choices)
    assert [mapped[f"lora.query.rank.{k}"] for k in (0, 1)] == [3, 3]  # rank 8 in both halves
    assert [mapped[f"lora.value.rank.{k}"] for k in (0, 1)] == [0, 0]
    assert [mapped[f"lora.ffn_out.rank.{k}"] for k in (0, 1)] == [0, 0]  # not in the earlier space: off
    assert mapped["learning_rate"] == 2
    # a layer is on where LoRA or IA3 was (layers 0, 1 and 5 of 6); the serial adapters' bits, unused, count for nothing
    assert [mapped[f"layer.{j}"] for j in range(12)] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]

    # and back: the largest of the blocks' ranks for all layers (value's rank 8 is on layers 0-2, all left out: no LoRA
    # there), the shared bits for each module, absent modules off
    back = map_params({**{f"lora.query.rank.{k}": r for k, r in ((0, 1), (1, 4))}, "lora.value.rank.0": 3, "lora.value.rank.1": 0,
                       "learning_rate": 0, **{f"layer.{j}": int(j >= 3) for j in range(6)}},
                      [("lora.query.rank", (0, 4, 8, 16)), ("lora.value.rank", (0, 4, 8, 16)), ("ia3", (0, 1)),
                       ("serial.size", (0, 8, 16, 32, 64)), ("learning_rate", (0.000667, 0.002, 0.006)),
                       *[(f"{m}.layer.{i}", (0, 1)) for m in ("lora", "ia3") for i in range(6)]],
                      {f"lora.{g}.rank.{k}": list(ranks) for g in ("query", "value") for k in (0, 1)})
    assert (back["lora.query.rank"], back["lora.value.rank"], back["ia3"], back["serial.size"]) == (3, 0, 0, 0)
    assert [back[f"lora.layer.{i}"] for i in range(6)] == [back[f"ia3.layer.{i}"] for i in range(6)] == [0, 0, 0, 1, 1, 1]


def test_a_method_chosen_per_module_group_maps_to_and_from_that_methods_ranks():
    ranks = [0, 2, 4, 8, 16]
    options = ("off", "lokr:4", "vera:256", "oft:16", "lora:4", "loha:4", "lora:8", "loha:8", "lora:16")
    # the lora space (ranks per half of the layers) on a 6-layer model ...
    lora = {"lora.query.rank.0": 4, "lora.query.rank.1": 3, "lora.value.rank.0": 0, "lora.value.rank.1": 1,
            "lora.ffn_in.rank.0": 0, "lora.ffn_in.rank.1": 0, "learning_rate": 2, **{f"layer.{j}": int(j >= 3) for j in range(6)}}
    lora_choices = {name: ranks for name in lora if ".rank." in name} | {"learning_rate": [0.000667, 0.002, 0.006]}
    # ... into the catalogue space on a 12-layer model: a method per group for all layers, the LoRA variant, shared bits
    catalogue = [*[(f"per_group.{g}", options) for g in ("query", "value", "ffn_in", "ffn_out")],
                 ("per_group.lora_variant", ("plain", "dora", "rslora", "pissa")),
                 ("learning_rate", (0.000667, 0.002, 0.006)), *[(f"layer.{j}", (0, 1)) for j in range(12)]]
    mapped = map_params(lora, catalogue, lora_choices)
    chosen = {n: dict(catalogue)[n][mapped[n]] for n in mapped if n.startswith("per_group.")}
    # query: rank 8 of the upper block (its rank 16 of the lower one, on layers all left out, trains nothing); value:
    # rank 2 goes to LoRA's nearest size offered, 4; the others and ffn_out off
    assert chosen == {"per_group.query": "lora:8", "per_group.value": "lora:4", "per_group.ffn_in": "off",
                      "per_group.ffn_out": "off", "per_group.lora_variant": "plain"}
    assert mapped["learning_rate"] == 2 and [mapped[f"layer.{j}"] for j in range(12)] == [0] * 6 + [1] * 6

    # and back: LoRA's sizes as ranks of every block; a group given another method has no LoRA there
    earlier = {"per_group.query": options.index("lora:16"), "per_group.value": options.index("loha:8"),
               "per_group.ffn_in": options.index("lora:4"), "per_group.lora_variant": 0, "learning_rate": 1,
               **{f"layer.{j}": int(j < 6) for j in range(12)}}
    back = map_params(earlier, [(name, tuple(choices)) for name, choices in lora_choices.items()] +
                      [(f"layer.{j}", (0, 1)) for j in range(6)], dict(catalogue))
    assert {n: ranks[back[n]] for n in back if ".rank." in n} == {
        "lora.query.rank.0": 16, "lora.query.rank.1": 16, "lora.value.rank.0": 0, "lora.value.rank.1": 0,
        "lora.ffn_in.rank.0": 4, "lora.ffn_in.rank.1": 4}
    assert [back[f"layer.{j}"] for j in range(6)] == [1, 1, 1, 0, 0, 0]
    # onto the same space on another model, whose choices are ordered otherwise and lack OFT: by value, OFT off
    other = ("off", "vera:256", "lokr:4", "lora:4", "loha:4", "lora:8", "loha:8", "lora:16")
    moved = map_params({**earlier, "per_group.ffn_out": options.index("oft:16")}, [(f"per_group.{g}", other) for g in
                       ("query", "value", "ffn_in", "ffn_out")], dict(catalogue))
    assert [other[moved[f"per_group.{g}"]] for g in ("query", "value", "ffn_in", "ffn_out")] == ["lora:16", "loha:8", "lora:4", "off"]
    assert shares_a_dimension(earlier, list(lora)) and shares_a_dimension(lora, [n for n, _ in catalogue])
    assert not shares_a_dimension({"ia3": 1, "layer.0": 1, "learning_rate": 0}, [n for n, _ in catalogue])


def test_a_warm_start_whose_plans_adapt_nothing_in_this_space_is_refused(tmp_path, tiny_bert, reviews_csv, monkeypatch):
    from autopeft.optimize import warm_start

    job = tiny_job(tmp_path, tiny_bert, reviews_csv, optimizer={"sampler": "autopeft", "warm_start": "earlier"})
    space = prepare(load_job(write_job(tmp_path, model=tiny_bert, task=job.task.model_dump(mode="json")))).space
    nothing = {d.name: 0 for d in space.dimensions}  # every rank 0: what a front of IA3 plans maps onto in a LoRA space
    monkeypatch.setattr(warm_start, "warm_points", lambda *args: [nothing])
    with pytest.raises(UserError, match=r"no plan of the front of '.*earlier' \(1 plan\), mapped onto this space, trains "
                                        r"something within the budget \(1 adapt nothing: their modules are not in this space\)"):
        prepare(job)


def test_a_search_whose_front_was_re_trained_warm_starts_from_its_re_evaluated_front():
    from autopeft.optimize.warm_start import _front_points
    from autopeft.record.study import FINAL, REFERENCE, SPACE

    ranks = optuna.distributions.IntDistribution(0, 4)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for rank, quality, params in [(1, 0.70, 100), (2, 0.80, 200), (3, 0.79, 250), (4, 0.85, 400)]:
        study.add_trial(optuna.trial.create_trial(params={"lora.query.rank": rank}, distributions={"lora.query.rank": ranks},
                                                  values=[quality, params]))
    study.set_user_attr(REFERENCE, {"quality": 0.5, "params": 1000})
    study.set_user_attr(SPACE, {"dimensions": {"lora.query.rank": [0, 2, 4, 8, 16]}, "fixed": {}})
    now = [("lora.query.rank", (0, 2, 4, 8, 16))]
    record = StudyRecord(study)
    assert [p["lora.query.rank"] for p in _front_points(record, "earlier", now, 5)] == [1, 2, 4]  # the search's front
    # re-trained over seeds: trial 1 falls under trial 0, trial 2 (off the search's front) holds, trial 3 collapses
    study.set_user_attr(FINAL, {"trial:0": {"1": {"quality": 0.72}}, "trial:1": {"1": {"quality": 0.70}},
                                "trial:2": {"1": {"quality": 0.81}}, "trial:3": {"1": {"quality": 0.5}}})
    assert [p["lora.query.rank"] for p in _front_points(record, "earlier", now, 5)] == [1, 3]


def tiny_job(directory, model, reviews_csv, **overrides):
    fields = dict(model=model, task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment",
                                     "validation_size": 100},
                  fidelity=TINY_FIDELITY, objectives={"quality_floor": 0.0}, budget={"trials": 3, "parallel": 1},
                  optimizer={"sampler": "random"})
    fields.update(overrides)
    return load_job(write_job(directory, **fields))


def test_a_search_on_a_deeper_model_starts_from_an_earlier_front_mapped_layer_by_layer(
        tmp_path, tiny_bert, tiny_distilbert, reviews_csv, ray_local, capsys, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    earlier = tiny_job(tmp_path / "a", tiny_bert, reviews_csv, name="earlier")  # 2 layers
    submit(earlier, progress=False)
    record = StudyRecord.load(earlier)
    smallest = record.study.trials[pareto_front(record.finished_points())[0].trial].params
    job = tiny_job(tmp_path / "b", tiny_distilbert, reviews_csv, name="later", budget={"trials": 4, "parallel": 1},
                   optimizer={"sampler": "autopeft", "n_startup_trials": 3, "warm_start": "../a/run"})  # 3 layers
    monkeypatch.chdir(tmp_path / "b")
    assert main(["check", str(tmp_path / "b" / "job.yaml")]) == 0
    told = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("warm start"))
    count = len(prepare(job).warm_start)
    assert told == (f"warm start {counted(count, 'point')} of the front of {tmp_path / 'a' / 'run'}, mapped onto this space, "
                    f"open{'s' if count == 1 else ''} the initial design of 3 trials")
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
        warm_points(tmp_path / "nothing", [("lora.query.rank", (0, 4, 8))], 5)
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="x", storage=storage, directions=["maximize", "minimize"])
    with pytest.raises(UserError, match="has not started"):
        warm_points(tmp_path / "empty.db", [("lora.query.rank", (0, 4, 8))], 5)


def test_a_warm_point_whose_plan_a_named_baseline_trains_is_not_counted_or_trained_again(tmp_path, tiny_bert, reviews_csv,
                                                                                        monkeypatch, capsys):
    from autopeft.optimize import warm_start
    from autopeft.optimize.domain import space_domain

    path = write_job(tmp_path, model=tiny_bert, task={"train_file": str(reviews_csv), "text_columns": ["review"],
                                                      "label_column": "sentiment", "validation_size": 100},
                     baselines=["lora-r8"], optimizer={"warm_start": "earlier"})
    (tmp_path / "cold").mkdir()
    baseline = prepare(load_job(write_job(tmp_path / "cold", model=tiny_bert, task=load_job(path).task.model_dump(mode="json"),
                                          baselines=["lora-r8"]))).baseline_points()["lora-r8"]
    other = {**baseline, "lora.query.rank.0": 1}
    monkeypatch.setattr(warm_start, "warm_points", lambda *args: [baseline, other])
    prepared = prepare(load_job(path))
    assert prepared.warm_start == [baseline, other]
    domain = space_domain(prepared.space, prepared.max_params, baselines=prepared.baseline_points())
    assert domain.not_baselines(prepared.warm_start) == [other]  # what the search enqueues
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(path)]) == 0
    assert "warm start 1 point of the front of" in capsys.readouterr().out


def test_a_warm_start_with_more_points_than_trials_trains_as_many_as_the_budget_and_queues_none(
        tmp_path, tiny_bert, reviews_csv, ray_local, monkeypatch, capsys):
    from autopeft.optimize import warm_start

    (tmp_path / "cold").mkdir()
    space = prepare(tiny_job(tmp_path / "cold", tiny_bert, reviews_csv)).space
    front = [{d.name: 0 for d in space.dimensions} | {"lora.query.rank.0": r, "layer.0": 1} for r in (1, 2, 3, 4)]
    limits = []
    monkeypatch.setattr(warm_start, "warm_points", lambda source, dims, limit: limits.append(limit) or front[:limit])
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 1},
                   optimizer={"sampler": "autopeft", "warm_start": "earlier"})  # an initial design of 10 by default
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(tmp_path / "job.yaml")]) == 0
    out = capsys.readouterr().out
    assert (f"warm start 2 points of the front of {tmp_path / 'earlier'}, mapped onto this space, open the initial design "
            "of 2 trials") in out
    assert submit(job, progress=False).finished == 2
    trials = StudyRecord.load(job).study.trials
    assert [t.params for t in trials] == front[:2] and limits[-1] == 2  # the front spread over the 2 trials, none left queued
    assert main(["report", str(tmp_path / "job.yaml")]) == 0
    StudyRecord.load(job).study.enqueue_trial(front[3])  # a plan queued to run (an interrupted trial's, on a resume)
    assert main(["report", str(tmp_path / "job.yaml")]) == 0
    assert "<td class=l>queued</td>" in (tmp_path / "run" / "report.html").read_text()

    (tmp_path / "none").mkdir()  # a job of baselines only: no trial starts from the front
    tiny_job(tmp_path / "none", tiny_bert, reviews_csv, budget={"trials": 0, "parallel": 1}, baselines=["lora-r8"],
             optimizer={"sampler": "autopeft", "warm_start": "earlier"})
    capsys.readouterr()
    assert main(["check", str(tmp_path / "none" / "job.yaml")]) == 0
    assert f"warm start none: budget.trials is 0, so no trial starts from the front of {tmp_path / 'none' / 'earlier'}" \
        in capsys.readouterr().out
