"""Scheduling overhead: how busy do the workers stay when trials are fast?

    python benchmarks/scheduling.py [--workers 16] [--trials 160] [--seconds 0.2 2] [--samplers random autopeft]

A real search (real Ray, MLflow and Optuna stores, the `lora` space on MiniLM-L6) whose trial
function only sleeps ``--seconds``: ``--workers`` trial slots share the machine's cores through
fractional CPUs. The trial function notes when it ran and in which worker. "Busy" is the time
workers spent in the trial function over workers × the steady-state wall time, which starts
when every worker has started its first trial (the workers' own start-up, importing torch, is
left out). It is given up to the start of the last trial, after which workers idle because the
budget is spent (the scheduling overhead alone), and up to the end of the last trial. The ideal
is 100%, ``workers / seconds`` trials a second.
"Driver CPU a trial" is the CPU the search's own process spent per trial (proposals, study and
MLflow records, charts), "study commits a trial" the transactions it made on the study's
database per trial, "gap" the median time a worker waits between the end of one trial and the
start of its next. The table goes to ``benchmarks/out/scheduling.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from reporting import publish


def fake_trial(context) -> dict:
    """Sleep the benchmark's trial length; a quality that grows with the plan's ranks, so the front is not flat."""
    started = time.time()
    time.sleep(float(os.environ.get("AUTOPEFT_FAKE_TRIAL_SECONDS", "0.2")))
    size = sum(len(str(part)) for part in context.plan.methods)
    return {"accuracy": 0.5 + 0.001 * (hash(context.plan.describe()) % 100) + 0.0001 * size,
            "started_at": started, "ended_at": time.time(), "worker": os.getpid()}


def run(sampler: str, workers: int, trials: int, seconds: float, root: Path) -> dict:
    from autopeft.api import submit
    from autopeft.job.load import parse_job
    from autopeft.record.study import METRICS, StudyRecord

    os.environ["AUTOPEFT_FAKE_TRIAL_SECONDS"] = str(seconds)
    job = parse_job({
        "name": f"scheduling-{sampler}-{seconds:g}", "model": "minilm-l6", "task": {"dataset": "rotten_tomatoes"},
        "search_space": "lora", "trainer": "scheduling:fake_trial", "optimizer": {"sampler": sampler},
        "budget": {"trials": trials, "parallel": workers},
        "resources": {"cpus": round(max(1, os.cpu_count() or 1) / workers, 3)},
        "fidelity": {"train_examples": 8, "eval_examples": 8},
        "stores": {"run_dir": str(root / f"{sampler}-{seconds:g}")},
    })
    import ray
    import sqlalchemy

    commits = []

    def commit(connection):
        if str(connection.engine.url).endswith("study.db"):
            commits.append(1)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", commit)
    cpu = time.process_time()
    try:
        submit(job, progress=False)
    finally:
        cpu = time.process_time() - cpu
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", commit)
    ray.shutdown()  # the next search starts its own workers, which read their trial length when they start
    calls = [t.user_attrs[METRICS] for t in StudyRecord.load(job).completed()]
    first = {}
    for call in calls:
        first[call["worker"]] = min(first.get(call["worker"], call["started_at"]), call["started_at"])
    start = max(first.values())  # every worker is up
    end = max(call["ended_at"] for call in calls)
    last_start = max(call["started_at"] for call in calls)  # from here on workers idle because the budget is spent

    def busy(until: float) -> float:
        inside = sum(max(0.0, min(call["ended_at"], until) - max(call["started_at"], start)) for call in calls)
        return inside / (workers * (until - start))

    done = sum(1 for call in calls if call["ended_at"] > start)
    wall = end - start
    gaps = []  # from the end of a worker's trial to the start of its next one
    for worker in first:
        mine = sorted((call for call in calls if call["worker"] == worker), key=lambda call: call["started_at"])
        gaps += [b["started_at"] - a["ended_at"] for a, b in zip(mine, mine[1:])]
    return {"per_minute": done / wall * 60, "busy": busy(end), "busy_scheduling": busy(last_start), "wall": wall,
            "driver_cpu": cpu / len(calls), "commits": len(commits) / len(calls), "workers_seen": len(first),
            "gap": statistics.median(gaps) if gaps else float("nan")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=160)
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.2, 2.0])
    parser.add_argument("--samplers", nargs="+", default=["random", "autopeft"])
    args = parser.parse_args(argv)
    lines = [f"{args.workers} workers, {args.trials} trials a search; steady state (every worker started) to the last trial's end",
             "| sampler | trial s | trials a minute | ideal | workers busy, to the last start | to the last end | "
             "driver CPU a trial, s | study commits a trial | gap, ms | steady-state wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            ideal = args.workers / seconds * 60
            for sampler in args.samplers:
                row = run(sampler, args.workers, args.trials, seconds, Path(tmp))
                lines.append(f"| {sampler} | {seconds:g} | {row['per_minute']:,.0f} | {ideal:,.0f} | {row['busy_scheduling']:.1%} | "
                             f"{row['busy']:.1%} | "
                             f"{row['driver_cpu']:.3f} | {row['commits']:.1f} | {1000 * row['gap']:.0f} | {row['wall']:.0f} |")
                print(lines[-1], flush=True)
    publish(lines, "scheduling")


if __name__ == "__main__":
    main()
