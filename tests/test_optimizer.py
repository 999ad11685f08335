"""Every selectable sampler proposes valid points of the PEFT space through the study; the optimizer benchmark runs on
a user's own collected trials."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autopeft.optimize.domain import space_domain
from autopeft.optimize.registry import SAMPLERS, make_sampler
from autopeft.record.pareto import Reference
from autopeft.record.study import DIRECTIONS
from autopeft.space.search_space import load_space
from autopeft.workers.models import model_shape


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_proposes_decodable_points_with_trials_running(tiny_bert, name):
    space = load_space("lora", model_shape(tiny_bert, num_labels=2))
    domain = space_domain(space, None, Reference(0.5, space.count(space.largest_plan()) + 1))
    study = optuna.create_study(directions=DIRECTIONS, sampler=make_sampler(name, seed=0, n_startup_trials=4, domain=domain))
    distributions = domain.distributions()
    pending = []
    for _ in range(14):
        trial = study.ask(distributions)
        plan = space.decode(trial.params)
        assert set(trial.params) == set(distributions)
        pending.append((trial, plan))
        if len(pending) == 2:  # two trials in flight, as with two workers
            done, plan = pending.pop(0)
            quality = 0.5 + 0.01 * sum(t.rank for t in plan['lora'].targets) if 'lora' in plan else 0.5
            study.tell(done, [quality, float(space.count(plan))])
    assert len(study.trials) == 14
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 13


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("cmaes", seed=0)
    with pytest.raises(ValueError, match="domain"):
        make_sampler("autopeft", seed=0)


def test_the_optimizer_benchmark_runs_on_a_job_file_whose_trials_were_collected(tmp_path):
    """`benchmarks/optimizer.py --problems JOB.yaml`: a user's own real trials as a benchmark, the same one as a built-in
    problem when it is the same job; a job file whose space cannot be read stops the run with its message."""
    benchmarks = Path(__file__).parent.parent / "benchmarks"
    text = (benchmarks / "jobs" / "rotten_lora_trials.yaml").read_text()
    job = tmp_path / "my_job.yaml"
    job.write_text(text.replace("search_space: lora_lr.yaml", f"search_space: {benchmarks / 'jobs' / 'lora_lr.yaml'}"))
    command = [sys.executable, str(benchmarks / "optimizer.py"), "--samplers", "random", "--seeds", "2", "--budgets", "12",
               "--parallel", "1", "--random-budget", "12", "--latency", "--workers", "1"]
    run = subprocess.run([*command, "--problems", str(job), "rotten-lora", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {name: [line.removeprefix(f"| {name} | ") for line in run.stdout.splitlines() if line.startswith(f"| {name} | ")]
            for name in ("rotten-lora", str(job))}
    assert len(rows[str(job)]) == 3 and rows[str(job)] == rows["rotten-lora"]  # hypervolume, its sources, the forest's fit
    assert rows[str(job)][-1].startswith("150 | ")  # fitted on its 150 trials

    broken = tmp_path / "broken.yaml"
    broken.write_text(text)  # its space, lora_lr.yaml, is not beside it
    run = subprocess.run([*command, "--problems", str(broken), "--out", str(tmp_path / "none")], capture_output=True,
                         text=True, timeout=600, check=False)
    assert run.returncode == 1 and f"{broken}: search_space: space file '{tmp_path / 'lora_lr.yaml'}' does not exist" in run.stderr
    assert not (tmp_path / "none").exists()
