"""A bf16 base (``fidelity.base_dtype: bfloat16``) against the fp32 base, in the same run: trial seconds,
peak memory and quality.

Each trial runs in a fresh process (so that its peak memory is its own) with autopeft's trainer, on real
models and data: MiniLM-L6 classifying Rotten Tomatoes (as the demo trains it) and SmolLM2-135M
generating "fresh" or "rotten" for a review (the built-in instruction task). The same plans, seeds and
batches for both dtypes; medians over the seeds. Peak memory is the process's peak resident memory, less
its resident memory before the model loaded (on a GPU, ``torch.cuda.max_memory_allocated``).

    .venv/bin/python benchmarks/base_dtype.py [--seeds 3] [--threads 2] [--only minilm-l6|smollm2-135m]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

MB = 2**20
CASES = [  # model, task type, plans, fidelity
    ("minilm-l6", "classification", ("lora-r8", "houlsby", "full"),
     {"train_examples": 1000, "eval_examples": 500, "max_seq_length": 64, "batch_size": 32, "learning_rate": 0.005}),
    ("smollm2-135m", "generation", ("lora-r8",),
     {"train_examples": 160, "eval_examples": 64, "max_seq_length": 96, "batch_size": 8, "learning_rate": 0.002}),
]


def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field_name + ":"))


def trial(model: str, kind: str, baseline: str, fidelity: dict, seed: int, threads: int) -> dict:
    """One trial in this (fresh) process: seconds, peak memory in MiB and metrics."""
    import torch

    from autopeft.job.data import load_task_data
    from autopeft.job.spec import TaskSpec
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import model_shape
    from autopeft.workers.trial import run_trial
    from autopeft.workers.types import Fidelity, TrialRequest

    torch.set_num_threads(threads)
    data = load_task_data(TaskSpec(type=kind, dataset="rotten_tomatoes"))
    shape = model_shape(model, data.num_labels)
    metric = "accuracy" if kind == "classification" else "exact_match"
    request = TrialRequest(0, baseline_plan(baseline, shape), model, data.num_labels, metric, Fidelity(**fidelity),
                           seed=seed, save_adapter=False)
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    started = time.perf_counter()
    result = run_trial(request, data)
    seconds = time.perf_counter() - started
    if torch.cuda.is_available():
        peak = result.peak_memory_mb
    else:
        peak = (_rss_kb("VmHWM") - before) / 1024
    return {"seconds": seconds, "peak_mb": peak, "quality": result.quality, "train_loss": result.metrics["train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    print("| model | plan | base | median s | peak MiB | quality | train loss | time vs fp32 | peak vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, kind, plans, fidelity in CASES:
        if args.only not in (None, model):
            continue
        with spawn.Pool(1) as pool:  # the model loaded (a .gguf dequantised) once, outside the timings
            pool.apply(trial, (model, kind, plans[0], {**fidelity, "train_examples": 8, "eval_examples": 8}, 0, args.threads))
        for baseline in plans:
            medians = {}
            for dtype in ("float32", "bfloat16"):
                runs = []
                for seed in range(args.seeds):
                    with spawn.Pool(1) as pool:
                        runs.append(pool.apply(trial, (model, kind, baseline, {**fidelity, "base_dtype": dtype}, seed, args.threads)))
                medians[dtype] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                row, fp32 = medians[dtype], medians["float32"]
                each = ", ".join(f"{r['quality']:.3f}" for r in runs)
                print(f"| {model} | {baseline} | {dtype} | {row['seconds']:.1f} | {row['peak_mb']:,.0f} | "
                      f"{row['quality']:.3f} ({each}) | {row['train_loss']:.4f} | "
                      f"{row['seconds'] / fp32['seconds']:.2f}x | {row['peak_mb'] / fp32['peak_mb']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
