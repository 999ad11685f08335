"""Every named baseline on the real MiniLM-L6 + Rotten Tomatoes task: trained at its own method's
learning rate (autopeft) against every method at the job's one rate (the baseline, in the same run).

The job's rate is LoRA's (0.005 here, the demo's); each method's own rate is that times its
``learning_rate_scale`` (VeRA, IA3 and prefix tuning 10, full fine-tuning 0.05 in both columns).
Run:  .venv/bin/python benchmarks/baselines.py [--seeds 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from unittest import mock

import torch

from autopeft.job.data import load_task_data
from autopeft.job.spec import TaskSpec
from autopeft.workers.build import count_trainable
from autopeft.workers.methods import METHODS, baseline_plan, every_baseline
from autopeft.workers.models import model_shape
from autopeft.workers.trial import run_trial
from autopeft.workers.types import Fidelity, TrialRequest


def one_rate():
    """Every method but full fine-tuning at the job's rate: how baselines trained before."""
    stack = contextlib.ExitStack()
    for descriptor in METHODS.values():
        if descriptor.name != "full":
            stack.enter_context(mock.patch.object(type(descriptor), "learning_rate_scale", 1.0))
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baselines", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_task_data(TaskSpec(dataset="rotten_tomatoes"))
    fidelity = Fidelity(train_examples=1000, eval_examples=500, max_seq_length=64, batch_size=32, learning_rate=0.005)
    shape = model_shape("minilm-l6", data.num_labels)
    names = args.baselines or list(every_baseline())
    print(f"MiniLM-L6, Rotten Tomatoes, 1000 train + 500 eval examples, 1 epoch, job rate {fidelity.learning_rate}, "
          f"median accuracy over {args.seeds} seed(s)")
    print(f"{'baseline':<14}{'trainable':>11}{'own rate':>10}{'one rate':>10}{'autopeft':>10}{'delta':>8}")
    for name in names:
        plan = baseline_plan(name, shape)
        scale = METHODS[plan.methods[0]].learning_rate_scale
        scores = {}
        for column, context in (("one", one_rate), ("own", contextlib.nullcontext)):
            values = []
            for seed in range(args.seeds):
                request = TrialRequest(0, plan, "minilm-l6", data.num_labels, "accuracy", fidelity, seed=seed, save_adapter=False)
                with context():
                    values.append(run_trial(request, data).quality)
            scores[column] = statistics.median(values)
        print(f"{name:<14}{count_trainable(plan, shape):>11,}{fidelity.learning_rate * scale:>10.4g}{scores['one']:>10.3f}"
              f"{scores['own']:>10.3f}{scores['own'] - scores['one']:>+8.3f}", flush=True)


if __name__ == "__main__":
    main()
