"""Result quality: does a 30-trial search within 1% of the model's parameters come within 0.5
accuracy points of full fine-tuning, and dominate every named baseline, once its front and the
baselines are re-trained over 3 new seeds?

    python benchmarks/result_quality.py [--seed N] [JOB.yaml ...]   # default: jobs/quality_rotten.yaml, jobs/quality_debates.yaml

Each job runs (or resumes) ``autopeft submit``: the lora space with the learning rate searched,
the named baselines at their methods' own rates, full fine-tuning as the reference row, and the
re-evaluation of the final front (``final.seeds: 3``). The table compares means over the seeds;
a job with ``final.fronts`` above 1 has two rows: the re-evaluated front of the search's Pareto
front's points alone (what ``fronts: 1`` re-trains) beside that of every re-trained point.

A job with held-out test examples (``task.test_file`` or ``task.test_size``) adds a second table:
the same front, chosen on the validation means, with every point and baseline measured by its
mean on the test examples, which neither the search nor the choice of front has seen. Its best
point is the validation table's, so the gap there is what a user reporting on a test set would
find. With ``--seed`` each job runs as a copy with that search seed (its name ends in ``-sN``); the
data, their split and the test examples are the job's. The report also goes to
``benchmarks/out/result_quality.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from autopeft import api
from autopeft.record.pareto import Point, dominates, hypervolume, mean_std, pareto_front
from autopeft.record.study import StudyRecord
from collect_trials import write_derived
from reporting import job_data, publish, write_job

HERE = Path(__file__).parent
JOBS = [HERE / "jobs" / "quality_rotten.yaml", HERE / "jobs" / "quality_debates.yaml"]
GAP = 0.005  # the target: within half an accuracy point of full fine-tuning


def on_test(point: Point) -> Point:
    """The point measured by its mean on the test examples instead of the validation examples."""
    return replace(point, quality=point.test, std=point.test_std)


def verdict(best: Point, full: Point, front: list[Point], named: dict[str, Point]) -> tuple[str, str, str]:
    """The cells gap (from full fine-tuning to ``best``), baselines ``front`` leaves undominated, and target."""
    gap = full.quality - best.quality
    undominated = [n for n, p in named.items() if not any(dominates(q, p) for q in front)]
    met = "met" if gap <= GAP and not undominated else "not met"
    return f"{100 * gap:+.2f}", f"{', '.join(undominated) or 'none'} of {len(named)}", met


def report(job_path: Path) -> tuple[list[str], list[str]]:
    """The job's rows of the validation table and, where its task has test examples, of the test table."""
    job = api.load_job(job_path)
    record = StudyRecord.load(job)
    points, baselines = record.final_points()
    full = baselines.get("full")
    if not points or full is None:
        return [f"| {job.name} | | re-evaluation missing: run the job to its end | | | | | |"], []
    named = {n: p for n, p in baselines.items() if n != "full"}
    # the re-evaluated Pareto front's points alone, then (with final.fronts > 1) every re-evaluated front's
    on_front = {p.trial for p in pareto_front(record.finished_points())}
    rows = [(1, [p for p in points if p.trial in on_front])] + ([(job.final.fronts, points)] if job.final.fronts > 1 else [])
    tested = all(p.test is not None for p in [*points, *baselines.values()])
    lines, test_lines = [], []
    for fronts, retrained in rows:
        front = pareto_front(retrained)
        best = max(front, key=lambda p: p.quality)
        gap, undominated, met = verdict(best, full, front, named)
        which = f"| {job.name} | {fronts} ({len(retrained)} points) |"
        lines.append(f"{which} {mean_std(full.quality, full.std)} | {mean_std(best.quality, best.std)} ({best.params:,}, "
                     f"{best.pct:.2f}%, {best.plan}) | {gap} | {hypervolume(front, record.reference):.4f} | {undominated} | "
                     f"{met} |")
        if tested:
            cells = verdict(on_test(best), on_test(full), [on_test(p) for p in front], {n: on_test(p) for n, p in named.items()})
            test_lines.append(f"{which} {mean_std(full.test, full.test_std)} | {mean_std(best.test, best.test_std)} (trial "
                              f"{best.trial}, {best.params:,}) | {' | '.join(cells)} |")
    return lines, test_lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, nargs="*", default=JOBS)
    parser.add_argument("--seed", type=int, help="the searches' seed (default: each job's)")
    args = parser.parse_args(argv)
    lines = ["| job | fronts re-evaluated (points) | full fine-tuning | best re-evaluated point (params, % of base, plan) | "
             "gap (points) | re-evaluated hypervolume | baselines not dominated | target |", "|---|---|---|---|---|---|---|---|"]
    test_lines = []
    for job_path in args.jobs:
        if args.seed is not None:
            data = job_data(job_path)
            data["seed"], data["name"] = args.seed, f"{data['name']}-s{args.seed}"
            job_path = write_job(data)
        write_derived(api.load_job(job_path))
        subprocess.run([sys.executable, "-m", "autopeft", "submit", str(job_path), "--no-progress"], check=True)
        validation, test = report(job_path)
        lines += validation
        test_lines += test
    if test_lines:
        lines += ["", ("On the held-out test examples: the same fronts and best points, each point and baseline measured by "
                       "its test mean"),
                  ("| job | fronts re-evaluated (points) | full fine-tuning | best re-evaluated point (trial, params) | "
                   "gap (points) | baselines not dominated | target |"), "|---|---|---|---|---|---|---|", *test_lines]
    publish(lines, "result_quality")


if __name__ == "__main__":
    main()
