"""Scheduling overhead: how busy do the workers stay when trials are fast?

    python benchmarks/scheduling.py [--workers 16] [--trials 160] [--seconds 0.2] [--samplers random autopeft]

A real search (real Ray, MLflow and Optuna stores, the `lora` space on MiniLM-L6) whose trial
function only sleeps ``--seconds``: ``--workers`` trial slots share the machine's cores through
fractional CPUs. Over workers × the wall time from the first trial's start to the last one's
end: "in flight" is the time trials were out on workers (the study's start and end of each
trial, so it counts the worker's own set-up of each trial: copying the base model, wrapping
it); "in the trial function" is the time spent in the function itself. The ideal is 100% and
``workers / seconds`` trials a second. The table goes to ``benchmarks/out/scheduling.md``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def fake_trial(context) -> dict:
    """Sleep the benchmark's trial length; a quality that grows with the plan's ranks, so the front is not flat."""
    time.sleep(float(os.environ.get("AUTOPEFT_FAKE_TRIAL_SECONDS", "0.2")))
    size = sum(len(str(part)) for part in context.plan.methods)
    return {"accuracy": 0.5 + 0.001 * (hash(context.plan.describe()) % 100) + 0.0001 * size}


def run(sampler: str, workers: int, trials: int, seconds: float, root: Path) -> tuple[float, float, float, float]:
    from autopeft.api import submit
    from autopeft.job.load import parse_job
    from autopeft.record.study import TRAIN_SECONDS, StudyRecord

    os.environ["AUTOPEFT_FAKE_TRIAL_SECONDS"] = str(seconds)
    job = parse_job({
        "name": f"scheduling-{sampler}", "model": "minilm-l6", "task": {"dataset": "rotten_tomatoes"},
        "search_space": "lora", "trainer": "scheduling:fake_trial", "optimizer": {"sampler": sampler},
        "budget": {"trials": trials, "parallel": workers},
        "resources": {"cpus": round(max(1, os.cpu_count() or 1) / workers, 3)},
        "fidelity": {"train_examples": 8, "eval_examples": 8},
        "stores": {"run_dir": str(root / sampler)},
    })
    submit(job, progress=False)
    done = [t for t in StudyRecord.load(job).trained() if t.datetime_complete is not None]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    wall = (end - start).total_seconds()
    in_flight = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    in_function = sum(t.user_attrs.get(TRAIN_SECONDS, 0.0) for t in done)
    return len(done) / wall * 60, in_flight / (workers * wall), in_function / (workers * wall), wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=160)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--samplers", nargs="+", default=["random", "autopeft"])
    args = parser.parse_args(argv)
    ideal = args.workers / args.seconds * 60
    lines = [f"{args.workers} workers, {args.seconds:g} s trials, {args.trials} trials: ideal {ideal:,.0f} trials a minute, 100% busy",
             "| sampler | trials a minute | of the ideal | workers busy: in flight | in the trial function | wall s |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in args.samplers:
            per_minute, busy, working, wall = run(sampler, args.workers, args.trials, args.seconds, Path(tmp))
            lines.append(f"| {sampler} | {per_minute:,.0f} | {per_minute / ideal:.1%} | {busy:.1%} | {working:.1%} | {wall:.0f} |")
    text = "\n".join(lines)
    print(text)
    out = HERE / "out" / "scheduling.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
