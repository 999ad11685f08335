"""Training steps per second on SmolLM2-135M with a LoRA plan: autopeft's trainer against a bare PyTorch loop.

Both train the same peft model (lora-r8 on query and value) on the same batches of the built-in
instruction task (Rotten Tomatoes as "fresh or rotten?", completion tokens learned), with AdamW.
The bare loop is the least a training loop can do: forward, backward, step. The target is
autopeft at 0.95x the bare loop's speed or better. Medians over repeats, in one run.

    .venv/bin/python benchmarks/decoder_speed.py [--steps 6] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.workers import train
from autopeft.workers.build import apply_plan
from autopeft.workers.generation import Generation
from autopeft.workers.methods import baseline_plan
from autopeft.workers.models import load_base, model_shape
from autopeft.workers.trial import TrialContext
from autopeft.workers.types import Fidelity

MODEL = "smollm2-135m"


def _context(data, fidelity, plan, shape) -> TrialContext:
    base = load_base(MODEL, 0)
    return TrialContext(load_model=lambda: base, plan=plan, shape=shape, data=data, fidelity=fidelity,
                        metric="exact_match", seed=0, device=torch.device("cpu"))


def bare_loop(context) -> float:
    """Seconds for the same steps in a plain loop: batches collated up front, then forward, backward, step."""
    model = apply_plan(context.model, context.plan, context.shape)
    examples = train.TrainingBatches(context, Generation)
    steps = int(context.fidelity.train_examples / context.fidelity.batch_size)
    inputs = [Generation.collate(context, [examples.tokens[i] for i in batch]) for batch in examples.epoch()][:steps]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=context.fidelity.learning_rate)
    model.train()
    started = time.perf_counter()
    for batch in inputs:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def autopeft_loop(context) -> float:
    started = time.perf_counter()
    train.train(context)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_task_data(TaskSpec(type="generation", dataset="rotten_tomatoes"))
    fidelity = Fidelity(train_examples=args.steps * args.batch_size, batch_size=args.batch_size,
                        max_seq_length=args.max_seq_length, learning_rate=2e-3, warmup_ratio=0.0)
    shape = model_shape(MODEL, 0)
    plan = baseline_plan("lora-r8", shape)
    load_base(MODEL, 0)  # load (and dequantise) once, outside the timings
    seconds = {"bare PyTorch loop (baseline)": [], "autopeft trainer": []}
    for _ in range(args.repeats):
        seconds["bare PyTorch loop (baseline)"].append(bare_loop(_context(data, fidelity, plan, shape)))
        seconds["autopeft trainer"].append(autopeft_loop(_context(data, fidelity, plan, shape)))
    base = args.steps / statistics.median(seconds["bare PyTorch loop (baseline)"])
    print(f"SmolLM2-135M, {plan.describe().split(' @')[0]} (460,800 trainable), batch {args.batch_size} x up to "
          f"{args.max_seq_length} tokens, {args.steps} steps, {args.threads} thread(s), {args.repeats} repeats")
    print("| loop | median s | steps/s | vs bare loop |\n|---|---|---|---|")
    for name, values in seconds.items():
        rate = args.steps / statistics.median(values)
        print(f"| {name} | {statistics.median(values):.1f} | {rate:.3f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
