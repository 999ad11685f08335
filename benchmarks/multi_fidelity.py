"""Multi-fidelity search: does a search with rungs (``fidelity.schedule: asha``) reach the hypervolume a
full-fidelity search reaches in 30 trials with at most half the training compute?

    python benchmarks/multi_fidelity.py [--trials 45] [--brackets N] [--seed N | 0-4] [--rungs F ...] [JOB.yaml ...]   # default: jobs/quality_rotten.yaml, jobs/quality_debates.yaml

For each job (real training: MiniLM-L6 on two real classification tasks) it runs, or resumes, two
copies of the job with neither baselines nor re-evaluation, so that each search trains alone: one
with 30 full-fidelity trials, and one with rungs (by default the job's: 1/3 and all of the steps,
reduction factor 3; ``--rungs`` sets others) and ``--trials`` trials, in ``--brackets``
brackets (``fidelity.brackets``, by default the job's; its run directory ends in ``-asha-bN``,
``-sN`` with ``--seed``, and ``-rF-...``, its rungs, so that a search is never resumed with others). Compute is the summed training seconds of every trial (each
rung counted, pruned trials included), and, since seconds vary with the machine's load, also the
optimizer steps trained (evaluations excluded). The table gives each search's hypervolume over its fully
trained trials (the job's reference point), its compute, the compute the search with rungs had spent
when it first reached the full-fidelity search's hypervolume (each rung counted for the part of it
trained by then), and the hypervolume the full-fidelity search had reached, in order of completion,
once it had spent the compute of the search with rungs. The target is met when the search with rungs
reached that hypervolume within half the full-fidelity search's seconds and steps. Two more
columns show how each search gets there: the seconds (as a share of the full-fidelity search's)
each had spent on first reaching 90% of the full-fidelity hypervolume, and how many trials of the
search with rungs went no further than their first rung. The last column gives, for each rung
before the last, Spearman's rank correlation between its quality and the final one over the
trials trained to the end: how well a rung foretells the full training; and the same of its validation
loss (negated). With several seeds (``--seed 0-4``) a last row per task gives the medians
over them of the compute ratios on first reaching the full-fidelity hypervolume (a search that never
did counts as the largest), and whether they meet the target.
The report also goes to ``benchmarks/out/multi_fidelity.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import spearmanr

from autopeft import api
from autopeft.record.pareto import Point, Reference, hypervolume
from autopeft.record.study import RUNG_FINISHED, RUNG_LOSS, RUNG_QUALITY, RUNG_SECONDS, TRAIN_SECONDS, States, StudyRecord
from autopeft.workers.types import Fidelity
from collect_trials import write_derived
from reporting import job_data, publish, write_job

HERE = Path(__file__).parent
JOBS = [HERE / "jobs" / "quality_rotten.yaml", HERE / "jobs" / "quality_debates.yaml"]
FULL_TRIALS = 30
EARLY = 0.9  # a share of the full-fidelity hypervolume: how soon each search gets most of the way


def search_only(job_path: Path, trials: int, schedule: str, brackets: int | None = None, seed: int | None = None,
                rungs: list[float] | None = None) -> Path:
    """A copy of the job with ``trials`` trials trained on ``schedule`` (full or asha, in ``brackets``
    brackets, with the job's seed or ``seed`` and its rungs or ``rungs``, all named in its run
    directory), no baselines and no re-evaluation."""
    data = job_data(job_path)
    data["name"] = f"{data['name']}-{schedule}"
    if schedule == "asha":
        data["fidelity"]["brackets"] = brackets or data["fidelity"].get("brackets") or Fidelity().brackets
        data["name"] += f"-b{data['fidelity']['brackets']}"
        if seed is not None:
            data["seed"] = seed
            data["name"] += f"-s{seed}"
        data["fidelity"]["rungs"] = rungs or data["fidelity"].get("rungs") or list(Fidelity().rungs)
        data["name"] += "-r" + "-".join(f"{r:.4g}" for r in data["fidelity"]["rungs"])
    data["baselines"] = []
    data["final"] = {"seeds": 0}
    data["budget"]["trials"] = trials
    data["fidelity"]["schedule"] = schedule
    return write_job(data)


def point(trial) -> Point:
    """A finished trial as a point of the (quality, trainable parameters) plane."""
    return Point(trial.number, trial.values[0], int(trial.values[1]), 0.0)


def trials_of(job) -> tuple[StudyRecord, list]:
    record = StudyRecord.load(job)
    return record, [t for t in record.trained() if t.state != States.RUNNING]


def steps(fidelity, fraction: float) -> int:
    """Optimizer steps of a training stopped at ``fraction`` of the fidelity's (as the built-in trainer counts them)."""
    total = fidelity.steps(fidelity.train_examples)
    return total if fraction >= 1 else min(total, max(1, round(fraction * total)))


def trained_steps(trial, fidelity) -> int:
    """The steps a trial of the search with rungs trained: all of them, or up to its last finished rung."""
    if trial.state == States.COMPLETE:
        return steps(fidelity, 1.0)
    done = len(trial.user_attrs.get(RUNG_QUALITY, []))
    return steps(fidelity, fidelity.rungs[done - 1]) if done else 0


def pieces(trial, fidelity) -> list[tuple[float, float, int]]:
    """(seconds, when it ended, steps) of each rung a trial of the search with rungs trained."""
    seconds, ended = trial.user_attrs.get(RUNG_SECONDS, []), trial.user_attrs.get(RUNG_FINISHED, [])
    bounds = [0] + [steps(fidelity, fidelity.rungs[i]) for i in range(len(seconds))]
    result = [(s, e, bounds[i + 1] - bounds[i]) for i, (s, e) in enumerate(zip(seconds, ended))]
    if trial.state == States.COMPLETE:
        result.append((trial.user_attrs.get(TRAIN_SECONDS, 0.0) - sum(seconds), trial.datetime_complete.timestamp(),
                       steps(fidelity, 1.0) - bounds[-1]))
    return result


def compute_to_reach(asha: list, target: float, reference, fidelity) -> tuple[float, float] | None:
    """(seconds, steps) the search with rungs had spent when its fully trained trials first reached ``target``.

    Each rung counts for the part of it trained by then (a rung runs from its end less its seconds).
    """
    finished = sorted((t for t in asha if t.state == States.COMPLETE), key=lambda t: t.datetime_complete)
    points = []
    for trial in finished:
        points.append(point(trial))
        if hypervolume(points, reference) >= target:
            now = trial.datetime_complete.timestamp()
            spent = [(piece, min(1.0, max(0.0, (now - piece[1] + piece[0]) / piece[0])) if piece[0] > 0 else 0.0)
                     for t in asha for piece in pieces(t, fidelity)]
            return sum(p[0] * share for p, share in spent), sum(p[2] * share for p, share in spent)
    return None


def full_compute_to_reach(full: list, target: float, reference) -> float | None:
    """Seconds the full-fidelity search had spent, in order of completion, when it first reached ``target``."""
    spent, points = 0.0, []
    for trial in full:
        spent += trial.user_attrs.get(TRAIN_SECONDS, 0.0)
        if trial.state == States.COMPLETE:
            points.append(point(trial))
            if hypervolume(points, reference) >= target:
                return spent
    return None


def rung_correlations(asha: list, rungs: tuple[float, ...]) -> str:
    """Spearman's rank correlation of each rung's quality (before the last) with the final quality, over the
    trials trained to the end: how well a rung foretells what the full training scores ("flat" where every
    trial scored the same there, "too few" under 3 trials); then the same of the rung's validation loss (negated,
    so that both are positive where the rung ranks as the full training does), where the trainer reports one."""
    done = [t for t in asha if t.state == States.COMPLETE]

    def correlation(pairs: list[tuple[float, float]]) -> str:
        flat = len({q for q, _ in pairs}) == 1 or len({f for _, f in pairs}) == 1
        return "too few" if len(pairs) < 3 else "flat" if flat else f"{spearmanr(*zip(*pairs)).statistic:.2f}"

    texts = []
    for i, rung in enumerate(rungs[:-1]):
        reached = [t for t in done if len(t.user_attrs.get(RUNG_QUALITY, [])) > i]
        text = f"{rung:.3g}: {correlation([(t.user_attrs[RUNG_QUALITY][i], t.values[0]) for t in reached])}"
        losses = [(-t.user_attrs[RUNG_LOSS][i], t.values[0]) for t in reached
                  if len(t.user_attrs.get(RUNG_LOSS, [])) > i and t.user_attrs[RUNG_LOSS][i] is not None]
        texts.append(text + (f" (by its loss {correlation(losses)})" if losses else ""))
    return ", ".join(texts)


def run(job_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "autopeft", "submit", str(job_path), "--no-progress"], check=True)


HEADER = ("| task | full fidelity, 30 trials: hypervolume, compute | with rungs: trials (fully trained), "
          "hypervolume, compute | compute ratio (seconds, steps) | compute ratio with rungs on first reaching the "
          "full-fidelity hypervolume (seconds, steps) | full fidelity at the compute with rungs | target | "
          f"seconds to {EARLY:.0%} of the full-fidelity hypervolume, with rungs and at full fidelity | "
          "trials stopped at the first rung | rank correlation of each rung with the final quality |")


@dataclass(frozen=True)
class FullFidelity:
    """A task's full-fidelity search, run (or resumed) once and compared with each of its searches with rungs."""

    task: str  # the job's own name
    trials: list  # in the order they finished
    reference: Reference
    hv: float
    seconds: float
    steps: int


def full_fidelity(job_path: Path) -> FullFidelity:
    source = api.load_job(job_path)
    write_derived(source)
    full_path = search_only(job_path, FULL_TRIALS, "full")
    run(full_path)
    job = api.load_job(full_path)
    record, full = trials_of(job)
    full = sorted([t for t in full if t.number < FULL_TRIALS], key=lambda t: t.datetime_complete)
    points = [point(t) for t in full if t.state == States.COMPLETE]
    return FullFidelity(source.name, full, record.reference, hypervolume(points, record.reference),
                        sum(t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in full), steps(job.fidelity, 1.0) * len(full))


def compare(job_path: Path, baseline: FullFidelity, trials: int, brackets: int | None, seed: int | None,
            rungs: list[float] | None):
    """One table row: the full-fidelity search against the search with rungs of ``seed``; and the compute ratios
    (seconds, steps) on first reaching the full-fidelity hypervolume, or None where it never did."""
    asha_path = search_only(job_path, trials, "asha", brackets, seed, rungs)
    run(asha_path)
    full, reference = baseline.trials, baseline.reference
    full_hv, full_seconds, full_steps = baseline.hv, baseline.seconds, baseline.steps
    asha_job = api.load_job(asha_path)
    _, asha = trials_of(asha_job)
    complete = [point(t) for t in asha if t.state == States.COMPLETE]
    asha_hv = hypervolume(complete, reference)
    asha_seconds = sum(t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in asha)
    spent, prefix = 0.0, []
    for t in full:
        spent += t.user_attrs.get(TRAIN_SECONDS, 0.0)
        if spent > asha_seconds:
            break
        if t.state == States.COMPLETE:
            prefix.append(point(t))
    ratio = asha_seconds / full_seconds
    step_ratio = sum(trained_steps(t, asha_job.fidelity) for t in asha) / full_steps
    reached = compute_to_reach(asha, full_hv, reference, asha_job.fidelity)
    ratios = None if reached is None else (reached[0] / full_seconds, reached[1] / full_steps)
    reached_text = "never" if ratios is None else f"{ratios[0]:.2f}, {ratios[1]:.2f}"
    verdict = "met" if ratios is not None and max(ratios) <= 0.5 else "not met"
    with_rungs = compute_to_reach(asha, EARLY * full_hv, reference, asha_job.fidelity)
    early = [with_rungs and with_rungs[0], full_compute_to_reach(full, EARLY * full_hv, reference)]
    early_text = ", ".join("never" if e is None else f"{e / full_seconds:.2f}" for e in early)
    first_only = sum(1 for t in asha if t.state != States.COMPLETE and len(t.user_attrs.get(RUNG_QUALITY, [])) <= 1)
    name = baseline.task + ("" if seed is None else f", seed {seed}")
    line = (f"| {name} | {full_hv:.4f}, {full_seconds:,.0f} s | {len(asha)} ({len(complete)}), {asha_hv:.4f}, "
            f"{asha_seconds:,.0f} s | {ratio:.2f}, {step_ratio:.2f} | {reached_text} | "
            f"{hypervolume(prefix, reference):.4f} | {verdict} | {early_text} | {first_only} | "
            f"{rung_correlations(asha, asha_job.fidelity.rungs)} |")
    return line, ratios


def median_row(task: str, ratios: list[tuple[float, float] | None]) -> str:
    """Each task's medians over its seeds of the compute ratios on first reaching the full-fidelity hypervolume (a
    search that never reached it counts as the largest): the target is met where both medians are at most a half."""
    seconds = statistics.median([math.inf if r is None else r[0] for r in ratios])
    steps_ = statistics.median([math.inf if r is None else r[1] for r in ratios])
    text = ", ".join("never" if math.isinf(v) else f"{v:.2f}" for v in (seconds, steps_))
    verdict = "met" if max(seconds, steps_) <= 0.5 else ("met on seconds only" if seconds <= 0.5 else
                                                          "met on steps only" if steps_ <= 0.5 else "not met")
    reached = sum(r is not None and max(r) <= 0.5 for r in ratios)
    return f"| {task}, median of {len(ratios)} seeds | | | | {text} | | {verdict} ({reached} of {len(ratios)} searches met) | | | |"


def seeds(text: str) -> list[int]:
    """``3``, ``0,1,2`` or ``0-4`` as a list of seeds."""
    values = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        values.extend(range(int(low), int(high or low) + 1))
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, nargs="*", default=JOBS)
    parser.add_argument("--trials", type=int, default=45, help="new trials of the search with rungs")
    parser.add_argument("--brackets", type=int, help="the search with rungs' fidelity.brackets (default: the job's)")
    parser.add_argument("--seed", type=seeds, help="the search with rungs' seed, or several (0,1,2 or 0-4): one search "
                        "each, and each task's medians over them (default: the job's)")
    parser.add_argument("--rungs", type=float, nargs="+", help="the search with rungs' fidelity.rungs (default: the job's)")
    args = parser.parse_args(argv)
    lines, medians = [HEADER, "|---|---|---|---|---|---|---|---|---|---|"], []
    for job_path in args.jobs:
        ratios, baseline = [], full_fidelity(job_path)
        for seed in args.seed or [None]:
            line, reached = compare(job_path, baseline, args.trials, args.brackets, seed, args.rungs)
            lines.append(line)
            ratios.append(reached)
        if len(ratios) > 1:
            medians.append(median_row(baseline.task, ratios))
    publish(lines + medians, "multi_fidelity")


if __name__ == "__main__":
    main()
