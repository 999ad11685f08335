"""Result quality: does a 30-trial search within 1% of the model's parameters come within 0.5
accuracy points of full fine-tuning, and dominate every named baseline, once its front and the
baselines are re-trained over 3 new seeds?

    python benchmarks/result_quality.py [JOB.yaml ...]   # default: jobs/quality_rotten.yaml, jobs/quality_debates.yaml

Each job runs (or resumes) ``autopeft submit``: the lora space with the learning rate searched,
the named baselines at their methods' own rates, full fine-tuning as the reference row, and the
re-evaluation of the final front (``final.seeds: 3``). The table compares means over the seeds;
the report also goes to ``benchmarks/out/result_quality.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from autopeft import api
from autopeft.record.pareto import dominates
from collect_trials import write_derived
from reporting import publish

HERE = Path(__file__).parent
JOBS = [HERE / "jobs" / "quality_rotten.yaml", HERE / "jobs" / "quality_debates.yaml"]
GAP = 0.005  # the target: within half an accuracy point of full fine-tuning


def report(job_path: Path) -> list[str]:
    job = api.load_job(job_path)
    front, baselines = api.read_final(job)
    full = baselines.get("full")
    if not front or full is None:
        return [f"| {job.name} | re-evaluation missing: run the job to its end | | | | |"]
    best = max(front, key=lambda p: p.quality)
    gap = full.quality - best.quality
    named = {n: p for n, p in baselines.items() if n != "full"}
    undominated = [n for n, p in named.items() if not any(dominates(q, p) for q in front)]
    verdict = "met" if gap <= GAP and not undominated else "not met"
    return [f"| {job.name} | {full.quality:.4f} ± {full.std:.4f} | {best.quality:.4f} ± {best.std:.4f} "
            f"({best.params:,}, {best.pct:.2f}%, {best.plan}) | {100 * gap:+.2f} | "
            f"{', '.join(undominated) or 'none'} of {len(named)} | {verdict} |"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, nargs="*", default=JOBS)
    args = parser.parse_args(argv)
    lines = ["| job | full fine-tuning | best re-evaluated point (params, % of base, plan) | gap (points) | "
             "baselines not dominated | target |", "|---|---|---|---|---|---|"]
    for job_path in args.jobs:
        write_derived(api.load_job(job_path))
        subprocess.run([sys.executable, "-m", "autopeft", "submit", str(job_path), "--no-progress"], check=True)
        lines += report(job_path)
    publish(lines, "result_quality")


if __name__ == "__main__":
    main()
