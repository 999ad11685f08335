"""Estimated against measured peak training memory, for plans on an encoder and on a decoder LLM.

Each configuration trains in a fresh process with autopeft's own trainer, on real text (Rotten
Tomatoes reviews joined so that every example fills ``max_seq_length``, the estimate's worst
case). Measured: on a GPU, ``torch.cuda.max_memory_allocated`` over loading and training; on
CPU, the process's peak resident memory while loading and training (the kernel's high-water
mark, reset once the libraries are imported) less its resident memory before the model
loaded. The estimate is ``autopeft.workers.memory.estimate_memory``, the one the search uses
for ``budget.max_memory_gb``. Ratios are estimate / measured; the table ends with their median.

The estimate leaves out the framework's own memory (code, allocator caches, the CUDA context),
the same for every plan of a model. Each model's first row measures it: one step of one 8-token
example with LoRA in the top layer only, whose measured peak less its estimate is that
overhead. The last column compares the estimate with the measured peak less that overhead.

The column "autograd keeps" is the peak of the activations autograd saved for the backward pass
(each storage counted once, weights left out), whatever the allocator does with them: on CPU,
glibc's heap keeps much of what is freed, and the measured peak can be up to twice what it is
with ``MALLOC_TRIM_THRESHOLD_=0`` in the environment, which hands freed memory back (see docs/memory.md).

    .venv/bin/python benchmarks/memory.py [--steps 3] [--only minilm-l6|smollm2-135m] [--base-dtype bfloat16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
from dataclasses import dataclass

import pandas as pd

from autopeft.job.data import rotten_tomatoes

MB = 2**20


@dataclass(frozen=True)
class Config:
    model: str
    baseline: str
    batch_size: int
    max_seq_length: int
    gradient_checkpointing: bool = False
    top_layers: int | None = None  # the baseline's plan cut to the top layers only
    base_dtype: str = "float32"

    @property
    def label(self) -> str:
        where = f" top {self.top_layers}" if self.top_layers else ""
        checkpointing = " +ckpt" if self.gradient_checkpointing else ""
        dtype = " bf16 base" if self.base_dtype == "bfloat16" else ""
        return f"{self.baseline}{where}{checkpointing}{dtype} b{self.batch_size}x{self.max_seq_length}"


CONFIGS = [
    Config("minilm-l6", "lora-r8", 1, 8, top_layers=1),
    Config("minilm-l6", "lora-r8", 32, 128),
    Config("minilm-l6", "lora-r8", 8, 64),
    Config("minilm-l6", "lora-r8", 32, 128, top_layers=2),
    Config("minilm-l6", "ia3", 32, 128),
    Config("minilm-l6", "houlsby", 32, 128),
    Config("minilm-l6", "prefix-10", 32, 128),
    Config("minilm-l6", "full", 32, 128),
    Config("minilm-l6", "lora-r8", 32, 128, gradient_checkpointing=True),
    Config("minilm-l6", "lora-r8", 32, 128, base_dtype="bfloat16"),
    Config("minilm-l6", "full", 32, 128, base_dtype="bfloat16"),
    Config("smollm2-135m", "lora-r8", 1, 8, top_layers=1),
    Config("smollm2-135m", "lora-r8", 4, 128),
    Config("smollm2-135m", "lora-r8", 8, 256),
    Config("smollm2-135m", "lora-mlp-r8", 4, 128),
    Config("smollm2-135m", "lora-r8", 4, 128, top_layers=10),
    Config("smollm2-135m", "ia3", 4, 128),
    Config("smollm2-135m", "prefix-10", 4, 128),
    Config("smollm2-135m", "lora-r8", 8, 256, gradient_checkpointing=True),
    Config("smollm2-135m", "full", 4, 128),
    Config("smollm2-135m", "lora-r8", 4, 128, base_dtype="bfloat16"),
    Config("smollm2-135m", "lora-r8", 8, 256, base_dtype="bfloat16"),
]


def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field_name + ":"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def _task_data(kind: str, texts: list[str]):
    from autopeft.workers.types import TaskData

    n = len(texts)
    if kind == "generation":
        pairs = tuple((t, "fresh") for t in texts)
        return TaskData(pairs, (), pairs[:8], (), (), kind="generation")
    labels = tuple(i % 2 for i in range(n))
    return TaskData(tuple((t,) for t in texts), labels, tuple((t,) for t in texts[:8]), labels[:8], ("rotten", "fresh"))


def _top_layers(plan, shape, keep: int):
    """``plan`` with each part cut to the top ``keep`` layers (the lower layers need no backward)."""
    from dataclasses import replace

    from autopeft.workers.methods.lora import Lora
    from autopeft.workers.plan import Plan

    top = set(range(shape.num_layers - keep, shape.num_layers))
    parts = []
    for part in plan.parts:
        if isinstance(part, Lora):
            parts.append(replace(part, targets=tuple(replace(t, layers=tuple(sorted(top & set(t.layers)))) for t in part.targets)))
        else:
            raise ValueError(f"cutting {type(part).__name__} to the top layers is not needed here")
    return Plan.of(*parts, learning_rate=plan.learning_rate)


def measure(config: Config, steps: int, texts: list[str]) -> dict:
    """Train ``config`` for ``steps`` steps in this (fresh) process: its estimate and measured peak in MiB."""
    import ctypes

    import torch

    from autopeft.workers import train
    from autopeft.workers.build import count_trainable
    from autopeft.workers.memory import SavedActivations, estimate_memory
    from autopeft.workers.methods import baseline_plan
    from autopeft.workers.models import load_base, model_shape
    from autopeft.workers.trial import TrialContext
    from autopeft.workers.types import Fidelity

    torch.set_num_threads(2)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    kind = "generation" if config.model == "smollm2-135m" else "classification"
    data = _task_data(kind, texts)
    shape = model_shape(config.model, data.num_labels)
    plan = baseline_plan(config.baseline, shape)
    if config.top_layers:
        plan = _top_layers(plan, shape, config.top_layers)
    fidelity = Fidelity(train_examples=max(8, steps * config.batch_size), batch_size=config.batch_size,
                        max_seq_length=config.max_seq_length, gradient_checkpointing=config.gradient_checkpointing,
                        warmup_ratio=0.0, base_dtype=config.base_dtype)
    trainable = count_trainable(plan, shape)
    estimate = estimate_memory(plan, shape, fidelity, trainable, gpu=gpu)
    before = _rss_kb("VmRSS")
    _reset_peak()
    base = load_base(config.model, data.num_labels, config.base_dtype)
    context = TrialContext(load_model=lambda: base, plan=plan, shape=shape, data=data, fidelity=fidelity,
                           metric="accuracy" if kind == "classification" else "exact_match", seed=0, device=device)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    saved = SavedActivations()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        _, losses = train.train(context)
    if gpu:
        measured = torch.cuda.max_memory_allocated() / MB
    else:
        measured = (_rss_kb("VmHWM") - before) / 1024
    return {"model": config.model, "config": config.label, "trainable": trainable, "steps": len(losses),
            "estimate_mb": estimate.total / MB, "activations_mb": (estimate.activations + estimate.output) / MB,
            "measured_mb": measured, "saved_mb": saved.peak / MB, "device": "cuda" if gpu else "cpu"}


def _texts(n: int, words: int) -> list[str]:
    """``n`` texts of about ``words`` words each, made of whole reviews."""
    reviews = rotten_tomatoes()["text"].tolist()
    texts, current = [], []
    for review in reviews:
        current.append(review)
        if sum(len(r.split()) for r in current) >= words:
            texts.append(" ".join(current))
            current = []
            if len(texts) == n:
                break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", default=None)
    parser.add_argument("--base-dtype", default=None, help="only the configurations with this base dtype (and each model's first)")
    args = parser.parse_args()
    configs = [c for i, c in enumerate(CONFIGS) if args.only in (None, c.model)
               and (args.base_dtype in (None, c.base_dtype) or c.model not in {d.model for d in CONFIGS[:i]})]
    texts = _texts(max(c.batch_size for c in configs) * args.steps, 400)
    spawn = multiprocessing.get_context("spawn")
    rows, overhead = [], {}
    for config in configs:
        with spawn.Pool(1) as pool:
            row = pool.apply(measure, (config, args.steps if config.batch_size > 1 else 1, texts))
        row["measures_overhead"] = config.model not in overhead
        overhead.setdefault(config.model, row["measured_mb"] - row["estimate_mb"])
        row["overhead_mb"] = overhead[config.model]
        row["ratio"] = row["estimate_mb"] / row["measured_mb"]
        row["ratio_less_overhead"] = row["estimate_mb"] / (row["measured_mb"] - row["overhead_mb"])
        rows.append(row)
        print(f"{row['model']:>13}  {row['config']:<28} {row['trainable']:>11,}  estimate {row['estimate_mb']:7.0f} MiB"
              f"  measured {row['measured_mb']:7.0f} MiB  autograd keeps {row['saved_mb']:6.0f} MiB  ratio {row['ratio']:.2f} ({row['ratio_less_overhead']:.2f})",
              flush=True)
    table = pd.DataFrame([r for r in rows if not r["measures_overhead"]])
    print()
    print(table[["model", "config", "trainable", "estimate_mb", "measured_mb", "saved_mb", "overhead_mb", "ratio", "ratio_less_overhead"]]
          .to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"\nmedian estimate / measured: {statistics.median(table['ratio']):.2f} "
          f"(range {table['ratio'].min():.2f} to {table['ratio'].max():.2f}); less the framework's overhead: "
          f"{statistics.median(table['ratio_less_overhead']):.2f} (range {table['ratio_less_overhead'].min():.2f} to "
          f"{table['ratio_less_overhead'].max():.2f}) on {rows[0]['device']}, {len(table)} configurations")


if __name__ == "__main__":
    main()
