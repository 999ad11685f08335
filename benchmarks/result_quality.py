"""Result quality: does a 30-trial search within 1% of the model's parameters come within 0.5
accuracy points of full fine-tuning, and dominate every named baseline, once its front and the
baselines are re-trained over 3 new seeds?

    python benchmarks/result_quality.py [JOB.yaml ...]   # default: jobs/quality_rotten.yaml, jobs/quality_debates.yaml

Each job runs (or resumes) ``autopeft submit``: the lora space with the learning rate searched,
the named baselines at their methods' own rates, full fine-tuning as the reference row, and the
re-evaluation of the final front (``final.seeds: 3``). The table compares means over the seeds;
a job with ``final.fronts`` above 1 has two rows: the re-evaluated front of the search's Pareto
front's points alone (what ``fronts: 1`` re-trains) beside that of every re-trained point. The
report also goes to ``benchmarks/out/result_quality.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from autopeft import api
from autopeft.record.pareto import dominates, hypervolume, pareto_front
from autopeft.record.study import StudyRecord
from collect_trials import write_derived
from reporting import publish

HERE = Path(__file__).parent
JOBS = [HERE / "jobs" / "quality_rotten.yaml", HERE / "jobs" / "quality_debates.yaml"]
GAP = 0.005  # the target: within half an accuracy point of full fine-tuning


def report(job_path: Path) -> list[str]:
    job = api.load_job(job_path)
    record = StudyRecord.load(job)
    points, baselines = record.final_points()
    full = baselines.get("full")
    if not points or full is None:
        return [f"| {job.name} | | re-evaluation missing: run the job to its end | | | | | |"]
    named = {n: p for n, p in baselines.items() if n != "full"}
    # the re-evaluated Pareto front's points alone, then (with final.fronts > 1) every re-evaluated front's
    on_front = {p.trial for p in pareto_front(record.finished_points())}
    rows = [(1, [p for p in points if p.trial in on_front])] + ([(job.final.fronts, points)] if job.final.fronts > 1 else [])
    lines = []
    for fronts, retrained in rows:
        front = pareto_front(retrained)
        best = max(front, key=lambda p: p.quality)
        gap = full.quality - best.quality
        undominated = [n for n, p in named.items() if not any(dominates(q, p) for q in front)]
        verdict = "met" if gap <= GAP and not undominated else "not met"
        lines.append(f"| {job.name} | {fronts} ({len(retrained)} points) | {full.quality:.4f} ± {full.std:.4f} | "
                     f"{best.quality:.4f} ± {best.std:.4f} ({best.params:,}, {best.pct:.2f}%, {best.plan}) | {100 * gap:+.2f} | "
                     f"{hypervolume(front, record.reference):.4f} | {', '.join(undominated) or 'none'} of {len(named)} | {verdict} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, nargs="*", default=JOBS)
    args = parser.parse_args(argv)
    lines = ["| job | fronts re-evaluated (points) | full fine-tuning | best re-evaluated point (params, % of base, plan) | "
             "gap (points) | re-evaluated hypervolume | baselines not dominated | target |", "|---|---|---|---|---|---|---|---|"]
    for job_path in args.jobs:
        write_derived(api.load_job(job_path))
        subprocess.run([sys.executable, "-m", "autopeft", "submit", str(job_path), "--no-progress"], check=True)
        lines += report(job_path)
    publish(lines, "result_quality")


if __name__ == "__main__":
    main()
