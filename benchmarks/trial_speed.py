"""Seconds per trial on the real MiniLM-L6 + Rotten Tomatoes task: length-grouped batches vs plain batches.

The built-in trainer groups examples of similar length into batches (less padding). The baseline
in the same run draws plain shuffled batches, padded to the longest example of each batch.
Run:  .venv/bin/python benchmarks/trial_speed.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from unittest import mock

import torch

from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.workers import train
from autopeft.workers.methods.lora import Lora, LoraTarget
from autopeft.workers.plan import Plan
from autopeft.workers.trial import run_trial
from autopeft.workers.types import Fidelity, TrialRequest


def plain_batches(indices, tokens, batch_size, rng: random.Random):
    order = list(indices)
    rng.shuffle(order)
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-examples", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_task_data(TaskSpec(dataset="rotten_tomatoes"))
    fidelity = Fidelity(train_examples=args.train_examples, eval_examples=500, max_seq_length=64, batch_size=32,
                        learning_rate=0.005)
    plan = Plan.of(Lora((LoraTarget("query", 8, 16.0, tuple(range(6))), LoraTarget("value", 8, 16.0, tuple(range(6))))))
    request = TrialRequest(0, plan, "minilm-l6", data.num_labels, "accuracy", fidelity, seed=0, save_adapter=False)
    run_trial(request, data)  # warm-up: load the model once
    rows = {}
    for name, patch in (("plain batches (baseline)", plain_batches), ("length-grouped (autopeft)", None)):
        seconds, quality = [], []
        for _ in range(args.repeats):
            with mock.patch.object(train, "_length_grouped", patch) if patch else contextlib.nullcontext():
                started = time.perf_counter()
                result = run_trial(request, data)
                seconds.append(time.perf_counter() - started)
                quality.append(result.quality)
        rows[name] = (statistics.median(seconds), min(seconds), max(seconds), statistics.median(quality))
    base = rows["plain batches (baseline)"][0]
    print(f"LoRA r=8 on q,v, MiniLM-L6, {args.train_examples} train + 500 eval examples, "
          f"{args.threads} thread(s), {args.repeats} repeats")
    print(f"{'batching':<28}{'median s':>10}{'min s':>8}{'max s':>8}{'accuracy':>10}{'speed-up':>10}")
    for name, (median, low, high, acc) in rows.items():
        print(f"{name:<28}{median:>10.1f}{low:>8.1f}{high:>8.1f}{acc:>10.3f}{base / median:>9.2f}x")


if __name__ == "__main__":
    main()
