"""`autopeft watch`: following a real search from another process, a last look at a finished one, bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna

from autopeft.api import read_front
from autopeft.cli import main
from autopeft.record.pareto import counted
from conftest import TINY_FIDELITY, TINY_FLOOR, write_job

TESTS = str(Path(__file__).parent)


def autopeft(*args, cwd, **kwargs):
    env = {**os.environ, "PYTHONPATH": TESTS}
    return subprocess.Popen([sys.executable, "-m", "autopeft", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_watch_follows_a_search_run_by_another_process_and_exits_when_it_finishes(tmp_path, tiny_bert, reviews_csv):
    job_path = write_job(
        tmp_path, model=tiny_bert, trainer="trainers:trains_slowly", fidelity=TINY_FIDELITY,
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        budget={"trials": 3, "parallel": 1}, optimizer={"sampler": "random"}, objectives={"quality_floor": TINY_FLOOR},
        baselines=["lora-r8"], final={"seeds": 1})
    driver = autopeft("submit", "job.yaml", "--no-progress", cwd=tmp_path)
    study_db = tmp_path / "run" / "study.db"
    deadline = time.monotonic() + 240
    while not study_db.is_file() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert study_db.is_file(), driver.communicate(timeout=60)
    watcher = autopeft("watch", str(job_path), "--interval", "0.5", cwd=tmp_path)
    out, err = watcher.communicate(timeout=600)
    driver_out, driver_err = driver.communicate(timeout=600)
    assert driver.returncode == 0, driver_err[-3000:]
    assert watcher.returncode == 0, err[-3000:]
    looks = out.split("\n\n")
    assert "running: driver process" in out and f"process {driver.pid}" in out
    assert "running now:" in out  # a trial seen while it trained, with its plan and elapsed time
    seen = [part.splitlines()[2] for part in out.split("running now:")[1:]]
    # the baseline and the re-evaluation are seen as they train, named, with their plan
    assert any(line.split()[0].endswith("s") and "baseline lora-r8: " in line for line in seen), seen
    assert any("re-evaluation of trial " in line and "(seed 1): " in line for line in seen), seen
    seen = [line for line in seen if line.split()[0].isdigit()]
    trained = [line for line in seen if "(being proposed)" not in line]  # a look may fall while a trial is proposed
    assert trained, seen
    running = trained[0]
    assert running.split()[0].isdigit() and running.split()[1].endswith("s") and "@" in running
    assert any(f"({socket.gethostname()} (ray node " in line for line in seen)  # and the machine it trains on
    last = out[out.rindex("search 't'"):]
    assert last.startswith("search 't': finished") and "3/3, 0 failed" in last and "running now:" not in last
    assert "trainings with new seeds (1 per point), 0 failed" in last and "Re-evaluated front (1 new seed per point" in last
    rows = last.split("Re-evaluated front (1 new seed per point")[1].splitlines()[1:]
    assert rows and not any("±" in row for row in rows), rows  # one seed has no spread: its mean alone, not "± 0.0000"
    front, _ = read_front(job_path)
    assert [int(line.split()[0]) for line in last.split("Pareto front:")[1].splitlines()[2:2 + len(front)]] == \
        [p.trial for p in front]
    assert len(looks) > 2  # it looked more than once
    assert "Pareto front (" in driver_out  # and the search itself was not disturbed


def test_watch_gives_a_last_look_at_a_finished_search_from_its_run_directory(searched, capsys):
    import re

    assert main(["watch", str(searched.run_dir)]) == 0
    out = capsys.readouterr().out
    front, reference = read_front(searched)
    assert out.startswith(f"search '{searched.name}': finished")
    assert "5/5, 0 failed" in out and f"front {counted(len(front), 'point')}" in out
    assert f"accuracy {reference.quality:.4f}, {reference.params:,} trainable parameters" in out

    assert re.search(rf"trained on: {re.escape(socket.gethostname())} \(ray node [0-9a-f]{{8}}\) cpu \(5\)", out), out


def floor_raised_above_every_trial(job, copy: Path) -> float:
    """Copy a finished search's study to ``copy`` with its quality floor raised to its best trial's quality."""
    import shutil

    shutil.copy(job.run_dir / "study.db", copy)
    study = optuna.load_study(study_name=job.name, storage=f"sqlite:///{copy}")
    best = max(t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    study.set_user_attr("reference", {**study.user_attrs["reference"], "quality": best})
    return best


def test_watch_leaves_out_trials_at_the_quality_floor_and_says_so_when_none_is_above(searched, tmp_path, capsys):
    copy = tmp_path / "study.db"
    best = floor_raised_above_every_trial(searched, copy)
    assert main(["watch", str(copy), "--once"]) == 0
    out = capsys.readouterr().out
    assert "front 0 points; hypervolume 0.0000" in out and f"best accuracy {best:.4f}" in out
    assert out.rstrip().endswith(f"Pareto front: no trial has scored above the quality floor (accuracy {best:.4f}) yet")


def test_watch_shows_the_finished_baselines_beside_the_front_and_without_one(tmp_path, tiny_bert, reviews_csv,
                                                                               ray_local, capsys):
    from autopeft.api import read_baselines, submit
    from autopeft.job.load import load_job

    job = load_job(write_job(
        tmp_path, model=tiny_bert, baselines=["lora-r8", "ia3"], fidelity=TINY_FIDELITY,
        task={"train_file": str(reviews_csv), "text_columns": ["review"], "label_column": "sentiment", "validation_size": 100},
        budget={"trials": 2, "parallel": 2}, optimizer={"sampler": "random"}, objectives={"quality_floor": TINY_FLOOR}))
    submit(job, progress=False)
    baselines = read_baselines(job)
    assert set(baselines) == {"lora-r8", "ia3"}
    rows = [f"{name:>9}  {p.quality:>9.4f}  {p.params:>10,}" for name, p in sorted(baselines.items(), key=lambda b: b[1].params)]

    assert main(["watch", str(job.run_dir), "--once"]) == 0
    out = capsys.readouterr().out
    table = out.split("Pareto front:")[1]
    assert table.index("baselines:") < table.index(rows[0]) < table.index(rows[1]) < table.index("reference point:")

    copy = tmp_path / "study.db"  # the same search, its floor raised above every trial: no front, the baselines still shown
    floor_raised_above_every_trial(job, copy)
    assert main(["watch", str(copy), "--once"]) == 0
    out = capsys.readouterr().out
    assert "front 0 points" in out and "no trial has scored above the quality floor" in out
    assert out.index("no trial has scored") < out.index("baselines:") < out.index(rows[0]) < out.index(rows[1])


def test_watch_that_sees_the_search_start_between_two_looks_shows_it_and_exits_once_it_ends(searched, capsys, monkeypatch):
    """The store is live: the reference point may land after ``watch`` saw a starting search and before it decided
    whether to stop. It must show the search, not crash."""
    from autopeft.record import lease
    from autopeft.record.study import StudyRecord

    reads = iter([False, True])
    monkeypatch.setattr(StudyRecord, "started", property(lambda self: next(reads, True)))
    drivers = iter(["driver-on-another-host"])
    monkeypatch.setattr(lease, "live_driver", lambda study: next(drivers, None))
    assert main(["watch", str(searched.run_dir), "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"search '{searched.name}': starting (its reference point is being measured)")
    assert f"search '{searched.name}': finished" in out and "5/5, 0 failed" in out


def test_watch_refuses_what_holds_no_search_with_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign = tmp_path / "other"
    foreign.mkdir()
    optuna.create_study(study_name="someone-else", storage=f"sqlite:///{foreign / 'study.db'}")
    unreachable = write_job(tmp_path, stores={"optuna_storage": "postgresql://autopeft@127.0.0.1:9/autopeft"})
    cases = {str(empty): "is neither a job file, a run directory nor a study database",
             str(foreign): "holds no search this version of autopeft can read",
             str(unreachable): "cannot read the study store postgresql://***@127.0.0.1:9/autopeft"}
    for target, words in cases.items():
        assert main(["watch", target]) == 2, target
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_report_writes_one_page_with_the_charts_the_front_and_every_trial(searched, tmp_path, capsys):
    import re
    from xml.etree import ElementTree

    from autopeft.dashboards.placement_chart import placement
    from autopeft.record.study import StudyRecord
    from autopeft.workers.models import model_shape

    out = tmp_path / "page" / "search.html"
    assert main(["report", str(searched.run_dir / "study.db"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    front, _ = read_front(searched)
    assert page.count("src='data:image/png;base64,") == 3  # hypervolume, placement, dimensions: inline
    front_table = page.split("<h2>Pareto front")[1].split("</table>")[0]
    assert [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", front_table)] == [p.trial for p in front]
    study = optuna.load_study(study_name=searched.name, storage=searched.optuna_storage)
    # the Pareto chart is inline SVG: a point per finished trial, its tooltip naming trial, quality and plan, linked to its row
    svg = ElementTree.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])
    ns = "{http://www.w3.org/2000/svg}"
    dots = {int(d.find(f"{ns}title").text.split("\n")[0].removeprefix("trial ")): d for d in svg.iter(f"{ns}circle")}
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "skipped" not in t.user_attrs]
    assert sorted(dots) == sorted(t.number for t in finished)
    for p in front:
        tip = dots[p.trial].find(f"{ns}title").text
        assert f"accuracy {p.quality:.4f}" in tip and f"{p.params:,} trainable parameters" in tip and p.plan in tip
        assert dots[p.trial].get("fill") == "#d9480f" and f"<tr id=trial-{p.trial}>" in page
    assert {a.get("href") for a in svg.iter(f"{ns}a")} == {f"#trial-{n}" for n in dots}
    trials = page.split(f"<h2>Every trial ({len(study.trials)})</h2>")[1]
    assert trials.count("<td class=l>finished</td>") == 5  # skipped proposals are listed too, with their reason
    assert trials.count("<td class=l>skipped</td>") == sum("skipped" in t.user_attrs for t in study.trials)

    record = StudyRecord.load(searched)
    plans = [record.plan_of(p.trial) for p in front]
    shape = model_shape(searched.model, record.num_labels)
    methods, counts, parameters = placement(plans, shape)
    assert methods == ["lora"]
    for layer in range(shape.num_layers):
        assert counts[0][layer] == sum(any(layer in t.layers for t in plan["lora"].targets) for plan in plans)
    heads = {p.params - placement([plan], shape)[2]["lora"] for p, plan in zip(front, plans, strict=True)}
    assert len(heads) == 1 and 0 < heads.pop() < min(p.params for p in front)  # the rest is the classification head
    assert parameters["lora"] == sum(placement([plan], shape)[2]["lora"] for plan in plans)


def test_long_commands_say_what_they_do_on_a_terminal_and_nothing_when_piped(searched, tmp_path, capsys, monkeypatch):
    import sys

    assert main(["report", str(searched.run_dir), "--out", str(tmp_path / "a.html")]) == 0
    assert capsys.readouterr().err == ""  # not a terminal: quiet
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["report", str(searched.run_dir), "--out", str(tmp_path / "b.html")]) == 0
    assert capsys.readouterr().err.splitlines() == ["autopeft: reading the study...", "autopeft: drawing the charts..."]
    assert main(["export", str(searched.run_dir.parent / "job.yaml"), "--out", str(tmp_path / "adapter")]) == 0
    assert "autopeft: exporting the knee point of" in capsys.readouterr().err
