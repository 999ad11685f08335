"""A search warm-started from another task's search against the same search started cold, on real trials.

    python benchmarks/warm_start.py [--target jobs/rotten_lora.yaml] [--source jobs/debates_lora.yaml] [--seeds 1]
    python benchmarks/warm_start.py --target benchmarks/jobs/rotten_mixed.yaml --source benchmarks/jobs/debates_mixed.yaml

The source search must have run (``benchmarks/collect_trials.py`` runs debates-lora and
debates-mixed) in the directory this runs from (its run directory is found from there). For each
seed, the target job runs twice in the same run, with the same reference point: cold, and with
``optimizer.warm_start`` set to the source. The table gives the hypervolume after the first 10
and 20 trained trials and the best quality, per seed and as medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

from reporting import job_data, write_job

HERE = Path(__file__).parent


def run(target: Path, source: Path | None, seed: int, out: Path) -> Path:
    job = job_data(target)
    kind = "warm" if source else "cold"
    job["name"] = f"{job['name']}-{kind}-{seed}"
    job["seed"] = seed
    job["stores"] = {"run_dir": str((out / job["name"]).resolve())}
    if source:
        job["optimizer"]["warm_start"] = str(source.resolve())
    path = write_job(job, out)
    subprocess.run([sys.executable, "-m", "autopeft", "submit", str(path), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    return path


def curve(path: Path, budgets: list[int]) -> dict:
    from autopeft.job.load import load_job
    from autopeft.record.pareto import hypervolume
    from autopeft.record.study import StudyRecord

    record = StudyRecord.load(load_job(path))
    points = sorted(record.finished_points(), key=lambda p: p.trial)
    return {"hv": [hypervolume(points[:b], record.reference) for b in budgets],
            "best": max(p.quality for p in points), "reference": record.reference}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=Path, default=HERE / "jobs" / "rotten_lora.yaml")
    parser.add_argument("--source", type=Path, default=HERE / "jobs" / "debates_lora.yaml")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "warm_start")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    budgets = [10, 20]
    rows = {"cold": [], "warm": []}
    for seed in range(args.seeds):
        for kind, source in (("cold", None), ("warm", args.source)):
            rows[kind].append(curve(run(args.target, source, seed, args.out), budgets))
    print(f"Hypervolume of {args.target.name}'s first trials, cold and warm-started from {args.source.name}")
    print(f"reference point: {rows['cold'][0]['reference']}\n")
    print("| start | seed | " + " | ".join(f"{b} trials" for b in budgets) + " | best quality |")
    print("|---|---|" + "---|" * (len(budgets) + 1))
    for kind, results in rows.items():
        for seed, r in enumerate(results):
            print(f"| {kind} | {seed} | " + " | ".join(f"{v:.4f}" for v in r["hv"]) + f" | {r['best']:.4f} |")
    for kind, results in rows.items():
        medians = [statistics.median(r["hv"][i] for r in results) for i in range(len(budgets))]
        print(f"| {kind} | median | " + " | ".join(f"{v:.4f}" for v in medians) + " | |")


if __name__ == "__main__":
    main()
