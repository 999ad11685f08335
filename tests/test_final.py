"""Re-evaluation of the final front: each Pareto point and baseline re-trained with new seeds after the search."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest

from autopeft.api import export, read_final, submit
from autopeft.cli import main
from autopeft.record.pareto import pareto_front
from autopeft.record.study import StudyRecord
from test_search import runs_of, tiny_job


def test_the_front_and_baselines_are_retrained_with_new_seeds_once_and_export_takes_a_retrained_adapter(
        tmp_path, tiny_bert, reviews_csv, ray_local, capsys, monkeypatch):
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 3, "parallel": 2}, baselines=["lora-r8"],
                   objectives={"quality_floor": 0.0}, final={"seeds": 2, "epochs": 2})
    summary = submit(job, progress=False)
    record = StudyRecord.load(job)
    search_front = summary.front
    assert summary.final_front and summary.final_baselines.keys() == {"lora-r8"}
    for p in [*summary.final_front, *summary.final_baselines.values()]:
        assert p.seeds == 2 and p.std is not None

    client, _, _ = runs_of(job)
    experiment = client.get_experiment_by_name(job.name)
    finals = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
              if r.data.tags.get("autopeft.kind") == "final"]
    targets = {f"trial:{p.trial}" for p in search_front} | {"baseline:lora-r8"}
    assert sorted((r.data.tags["autopeft.final_of"], r.data.tags["autopeft.seed"]) for r in finals) == \
        sorted((t, s) for t in targets for s in ("1", "2"))
    assert all(r.info.status == "FINISHED" for r in finals)
    # the re-training ran at final.epochs: twice the steps of the search's trial
    first = search_front[0].trial
    steps = {r.data.tags["autopeft.seed"]: r.data.metrics["train_steps"] for r in finals
             if r.data.tags["autopeft.final_of"] == f"trial:{first}"}
    assert steps == {"1": 2 * record.trial_info(first)["metrics"]["train_steps"]} | {"2": steps["1"]}
    # new seeds are new trainings: their adapters differ
    a, b = (job.layout.final_adapter(f"trial:{first}", s) / "adapter_model.safetensors" for s in (1, 2))
    assert a.read_bytes() != b.read_bytes()

    parent = client.get_run(summary.parent_run_id)
    assert parent.data.metrics["final_hypervolume"] == summary.final_hypervolume
    logged = json.loads(open(client.download_artifacts(summary.parent_run_id, "final_front.json", str(tmp_path))).read())
    assert [row["trial"] for row in logged["front"]] == [p.trial for p in summary.final_front]
    assert sorted(row["trial"] for row in logged["points"]) == sorted(p.trial for p in search_front)
    assert {row["trial"]: row["quality"] for row in logged["points"]} == {p.trial: p.quality for p in summary.final_points}

    # watch shows where the re-evaluation stands and its front, beside the search's
    monkeypatch.chdir(tmp_path)
    retrainings = 2 * (len(search_front) + 1)
    assert main(["watch", "job.yaml", "--once"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"search '{job.name}': finished\n")
    assert f"re-evaluation [{'#' * 30}] {retrainings}/{retrainings} trainings with new seeds (2 per point), 0 failed" in out
    shown = out.split(f"Re-evaluated front (2 new seeds per point, mean ± std; hypervolume {summary.final_hypervolume:.4f}):\n")[1]
    rows = shown.splitlines()[1:]
    assert [int(row.split()[0]) for row in rows[:len(summary.final_front)]] == [p.trial for p in summary.final_front]
    assert rows[len(summary.final_front)] == "baselines:" and rows[len(summary.final_front) + 1].split()[:4] == \
        ["lora-r8", f"{summary.final_baselines['lora-r8'].quality:.4f}", "±", f"{summary.final_baselines['lora-r8'].std:.4f}"]
    failed_status = "finished; 1 re-evaluation failed: submit the same job again to retry it"
    for lost, status in (({}, "stopped before its re-evaluation finished: submit the same job again to resume it"),
                         ({"error": "killed", "reason": "killed"}, failed_status)):
        copy = tmp_path / f"study-{len(lost)}.db"
        shutil.copy(job.run_dir / "study.db", copy)
        study = optuna.load_study(study_name=job.name, storage=f"sqlite:///{copy}")
        final = study.user_attrs["final"]
        final["baseline:lora-r8"] = {**final["baseline:lora-r8"], "2": lost} if lost else {"1": final["baseline:lora-r8"]["1"]}
        study.set_user_attr("final", final)
        assert main(["watch", str(copy), "--once"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"search '{job.name}': {status}\n")
        assert f"] {retrainings - (0 if lost else 1)}/{retrainings} trainings with new seeds (2 per point), {len(lost) // 2} failed" in out
        assert ("Re-evaluated front so far (2 new seeds" in out) == (not lost)
    # a point of the search's front whose new seeds learned nothing is named, with its mean, off the re-evaluated front
    copy = tmp_path / "study-collapsed.db"
    shutil.copy(job.run_dir / "study.db", copy)
    study = optuna.load_study(study_name=job.name, storage=f"sqlite:///{copy}")
    final = study.user_attrs["final"]
    final[f"trial:{first}"] = {seed: {**r, "quality": 0.0} for seed, r in final[f"trial:{first}"].items()}
    study.set_user_attr("final", final)
    assert main(["watch", str(copy), "--once"]) == 0
    out = capsys.readouterr().out
    assert f"off the front on re-evaluation: trial {first} (0.0000 ± 0.0000, {search_front[0].params:,} trainable; " \
        "at or under the quality floor 0.0000)" in out
    table = out.split("Re-evaluated front (2 new seeds per point")[1].split("baselines:")[0].splitlines()[2:]
    assert first not in [int(row.split()[0]) for row in table]
    # a job resumed with other baselines: the search waits for the new one; a dropped one is not re-evaluated
    for baselines, status, shown in ((["ia3"], "stopped before its budget", "baselines 0/1"),
                                     ([], "finished", f"{retrainings - 2}/{retrainings - 2} trainings")):
        copy = tmp_path / f"study-{len(baselines)}-baselines.db"
        shutil.copy(job.run_dir / "study.db", copy)
        study = optuna.load_study(study_name=job.name, storage=f"sqlite:///{copy}")
        study.set_user_attr("job", {**study.user_attrs["job"], "baselines": baselines})
        assert main(["watch", str(copy), "--once"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"search '{job.name}': {status}") and shown in out

    again = submit(job, progress=False)  # nothing left to re-train: no new run
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sum(r.data.tags.get("autopeft.kind") == "final" for r in runs) == len(finals)
    assert [(p.trial, p.quality) for p in again.final_front] == [(p.trial, p.quality) for p in summary.final_front]
    assert len(optuna.load_study(study_name=job.name, storage=job.optuna_storage).trials) == len(record.study.trials)

    # final.fronts: 3 on resume re-trains the fronts below the first as well (three trials lie on at most three),
    # and none of the points already re-trained again
    wider = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 3, "parallel": 2}, baselines=["lora-r8"],
                     objectives={"quality_floor": 0.0}, final={"seeds": 2, "epochs": 2, "fronts": 3})
    widened = submit(wider, progress=False)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    retrained = sorted((r.data.tags["autopeft.final_of"], r.data.tags["autopeft.seed"]) for r in runs
                       if r.data.tags.get("autopeft.kind") == "final")
    every = {f"trial:{p.trial}" for p in record.finished_points()} | {"baseline:lora-r8"}
    assert retrained == sorted((t, s) for t in every for s in ("1", "2"))
    points, _ = StudyRecord.load(wider).final_points()
    assert sorted(p.trial for p in points) == sorted(p.trial for p in record.finished_points())
    assert [p.trial for p in widened.final_front] == [p.trial for p in pareto_front(points)]
    kept = {p.trial: p.quality for p in points}
    assert all(kept[p.trial] == p.quality for p in summary.final_front)

    assert main(["pareto", "job.yaml"]) == 0
    out = capsys.readouterr().out
    assert "Re-evaluated front (2 new seeds per point, mean ± std)" in out and " ± " in out
    off = sorted({p.trial for p in search_front} - {p.trial for p in widened.final_front})
    assert ("off the front on re-evaluation: " in out) == bool(off)
    assert all(f"trial {t} (" in out.split("off the front on re-evaluation: ")[1] for t in off)
    assert main(["pareto", "job.yaml", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert sorted(p["trial"] for p in listing["final_points"]) == sorted(p.trial for p in points)
    for front, baselines, by in ((listing["front"], listing["baselines"], listing["baselines_dominated_by"]),
                                 (listing["final_front"], listing["final_baselines"], listing["final_baselines_dominated_by"])):
        assert set(by) == set(baselines) == {"lora-r8"}
        base = baselines["lora-r8"]
        beating = [p for p in front if p["quality"] >= base["quality"] and p["params"] <= base["params"]
                   and (p["quality"], -p["params"]) != (base["quality"], -base["params"])]
        assert by["lora-r8"] == (min(beating, key=lambda p: p["params"])["trial"] if beating else None)

    front, _ = read_final(job)
    exported = export(job, "best", tmp_path / "adapter")
    best = max(front, key=lambda p: p.quality)
    assert exported.point == best
    info = json.loads((tmp_path / "adapter" / "autopeft_point.json").read_text())
    assert info["seeds"] == 2 and info["quality"] == best.quality
    chosen = job.layout.final_adapter(f"trial:{best.trial}", info["adapter_seed"]) / "adapter_model.safetensors"
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == chosen.read_bytes()
    with StudyRecord.load(job) as stored:  # the seed that scored best on validation, with its own scores
        seeds, retrained = stored.final_seeds(f"trial:{best.trial}"), stored.final[f"trial:{best.trial}"]
    assert info["adapter_seed"] == min(seeds, key=lambda s: (-seeds[s], s)) and info["adapter_quality"] == max(seeds.values())
    assert info["metrics"] == retrained[str(info["adapter_seed"])]["metrics"]
    assert info["adapter_mlflow_run_id"] == retrained[str(info["adapter_seed"])]["mlflow_run_id"] != info["mlflow_run_id"]
    assert main(["export", "job.yaml", "--pick", "best", "--out", str(tmp_path / "again")]) == 0
    assert (f"\n  the adapter re-trained with seed {info['adapter_seed']}, the best of its seeds on validation "
            f"(accuracy {info['adapter_quality']:.4f})\n") in capsys.readouterr().out

    # a named baseline exports too: its re-trained adapter, with the mean over its seeds
    exported = export(job, "baseline=lora-r8", tmp_path / "baseline")
    info = json.loads((tmp_path / "baseline" / "autopeft_point.json").read_text())
    assert exported.source == "baseline lora-r8" and info["baseline"] == "lora-r8" and info["trial"] is None
    assert info["quality"] == summary.final_baselines["lora-r8"].quality and info["seeds"] == 2
    assert info["trainable_params"] == summary.final_baselines["lora-r8"].params
    retrained = job.layout.final_adapter("baseline:lora-r8", info["adapter_seed"]) / "adapter_model.safetensors"
    assert (tmp_path / "baseline" / "adapter_model.safetensors").read_bytes() == retrained.read_bytes()
    assert main(["export", str(tmp_path / "job.yaml"), "--pick", "baseline=ia3", "--out", str(tmp_path / "none")]) == 2
    assert "no baseline 'ia3' has finished in this search. Fix: use one of lora-r8" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_search_resumed_with_a_re_evaluation_and_more_trials_resumes_again_and_watch_follows_the_new_job(
        tmp_path, tiny_bert, reviews_csv, ray_local, capsys, monkeypatch):
    fields = {"objectives": {"quality_floor": 0.0}, "optimizer": {"sampler": "random"}}
    submit(tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 2}, **fields), progress=False)
    # examples held out of the training data would change what the search trained on: refused from its start
    held_out = {"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment",
                "validation_size": 100, "test_size": 40}
    tiny_job(tmp_path, tiny_bert, reviews_csv, task=held_out, budget={"trials": 2, "parallel": 2}, final={"seeds": 1}, **fields)
    assert main(["check", str(tmp_path / "job.yaml")]) == 2
    assert "task.test_size: the search 't' was started with task.test_size: None" in capsys.readouterr().err
    # resumed with a re-evaluation at a longer training than the search's, then with a third trial
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 2}, final={"seeds": 1, "epochs": 2}, **fields)
    assert submit(job, progress=False).final_front
    more = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 3, "parallel": 2}, final={"seeds": 1, "epochs": 2}, **fields)
    summary = submit(more, progress=False)
    assert summary.finished == 3 and summary.final_front
    record = StudyRecord.load(more)
    assert all(record.final_seeds(f"trial:{p.trial}") for p in summary.front)  # the new front's points too
    monkeypatch.chdir(tmp_path)
    assert main(["watch", "job.yaml", "--once"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"search '{more.name}': finished\n") and "] 3/3, 0 failed" in out
    assert f"Re-evaluated front (1 new seed per point; hypervolume {summary.final_hypervolume:.4f}):" in out


def test_a_search_stopped_during_its_re_evaluation_says_so_in_its_report(tmp_path, tiny_bert, reviews_csv, ray_local,
                                                                         monkeypatch):
    from autopeft.run.pool import WorkerPool

    sent = WorkerPool.submit

    def stopped_at_the_re_evaluation(self, request):  # Ctrl-C as the first re-training is sent to its worker
        if request.trial_number is None and request.baseline is None and not request.zero_shot:
            raise KeyboardInterrupt
        return sent(self, request)

    monkeypatch.setattr(WorkerPool, "submit", stopped_at_the_re_evaluation)
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, budget={"trials": 2, "parallel": 1},
                   objectives={"quality_floor": 0.0}, final={"seeds": 1})
    with pytest.raises(KeyboardInterrupt):
        submit(job, progress=False)
    client, parents, children = runs_of(job)
    assert len(children) == 2 and parents[0].info.status == "KILLED"
    page = open(client.download_artifacts(parents[0].info.run_id, "report.html", str(tmp_path))).read()
    assert "<b>stopped before its re-evaluation finished: submit the same job again to resume it</b>" in page


def test_a_test_file_is_scored_by_the_re_evaluation_alone_with_each_adapters_own_score_on_it(
        tmp_path, tiny_bert, reviews_csv, ray_local, capsys, monkeypatch):
    import pandas as pd
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from autopeft.job.data import rotten_tomatoes

    seen = set(pd.read_csv(reviews_csv)["review"])
    held_out = rotten_tomatoes().loc[lambda f: ~f["text"].isin(seen)].sample(n=80, random_state=2)
    held_out.rename(columns={"text": "review", "label": "sentiment"}).to_json(tmp_path / "test.jsonl", orient="records",
                                                                             lines=True)
    task = {"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100,
            "test_file": "test.jsonl"}
    job = tiny_job(tmp_path, tiny_bert, reviews_csv, task=task, budget={"trials": 2, "parallel": 2}, baselines=["lora-r8"],
                   objectives={"quality_floor": 0.0}, final={"seeds": 2})
    summary = submit(job, progress=False)
    record = StudyRecord.load(job)

    # the search never scores the test file: its trials and baselines hold no test metric
    client, _, children = runs_of(job)
    assert children and not any(k.startswith("test_") for r in children for k in r.data.metrics)
    assert not any(k.startswith("test_") for t in record.study.trials for k in t.user_attrs.get("metrics", {}))
    # each re-training is scored on all of it; the point's test score is the mean over its seeds
    final = record.final
    assert summary.final_points and summary.final_baselines.keys() == {"lora-r8"}
    assert all(p.test is not None and p.test_std is not None
               for p in [*summary.final_points, *summary.final_baselines.values()])
    for target, seeds in final.items():
        scores = [seeds[s]["test_quality"] for s in ("1", "2")]
        assert all(seeds[s]["metrics"]["test_accuracy"] == seeds[s]["test_quality"] for s in ("1", "2"))
        assert all(k * 80 == pytest.approx(round(k * 80)) for k in scores)  # a share of the 80 test examples
        point = summary.final_baselines["lora-r8"] if target == "baseline:lora-r8" else \
            next(p for p in summary.final_points if f"trial:{p.trial}" == target)
        assert point.test == pytest.approx(sum(scores) / 2)

    for p in summary.final_points:
        logged = client.get_run(record.trial_info(p.trial)["mlflow_run_id"]).data.metrics
        assert (logged["final_test_mean"], logged["final_test_std"]) == (p.test, p.test_std)

    # the exported adapter's score on the test file is what peft alone measures on it
    exported = export(job, "best", tmp_path / "out")
    info = json.loads((tmp_path / "out" / "autopeft_point.json").read_text())
    assert info["test_quality"] == exported.point.test and info["adapter_test_quality"] is not None
    labels = info["labels"]
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=len(labels), ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(base, str(tmp_path / "out")).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tokenizer(held_out["text"].tolist(), truncation=True, max_length=job.fidelity.max_seq_length, padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        predicted = [labels[i] for i in model(**batch).logits.argmax(-1).tolist()]
    accuracy = sum(p == y for p, y in zip(predicted, held_out["label"], strict=True)) / len(held_out)
    assert accuracy == pytest.approx(info["adapter_test_quality"], abs=1.5 / len(held_out))

    # pareto shows the test column beside the validation one, and JSON holds it
    monkeypatch.chdir(tmp_path)
    assert main(["pareto", "job.yaml"]) == 0
    shown = capsys.readouterr().out.split("Re-evaluated front")[1]
    header, *rows = shown.splitlines()[1:]
    assert header.split()[:4] == ["trial", "accuracy", "test", "accuracy"]
    for p in summary.final_front:
        row = next(r for r in rows if r.split()[0] == str(p.trial))
        assert row.split()[1:7] == [f"{p.quality:.4f}", "±", f"{p.std:.4f}", f"{p.test:.4f}", "±", f"{p.test_std:.4f}"]
    assert main(["pareto", "job.yaml", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["final_points"]
    assert {row["trial"]: row["test"] for row in points} == {p.trial: p.test for p in summary.final_points}

    assert main(["report", "job.yaml", "--out", "report.html"]) == 0
    page = (tmp_path / "report.html").read_text()
    assert page.count("<th>test accuracy</th>") == 2  # the re-evaluated front's table and its baselines'
    assert all(f"<td>{p.test:.4f} ± {p.test_std:.4f}</td>" in page for p in summary.final_front)

    # once the re-evaluation has scored it, the test file is part of the search: another is refused
    other = tmp_path / "other.jsonl"
    other.write_text((tmp_path / "test.jsonl").read_text())
    (tmp_path / "job.yaml").write_text((tmp_path / "job.yaml").read_text().replace("test.jsonl", "other.jsonl"))
    assert main(["check", "job.yaml"]) == 2
    assert "task.test_file" in capsys.readouterr().err
