"""One trial on a worker: build the model, run the trainer, measure, package the adapter."""

from __future__ import annotations

import importlib
import math
import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .build import apply_plan, count_trainable, save_adapter
from .models import ModelShape, load_base, model_shape
from .plan import Plan
from .train import evaluate, evaluate_test
from .types import Fidelity, TaskData, TrialOutcomeError, TrialRequest, TrialResult

BUILTIN_TRAINER = "autopeft.workers.train:train_and_evaluate"


@dataclass
class TrialContext:
    """What a trial function receives. Call ``apply_plan()`` to get the peft-wrapped model.

    ``model`` and ``tokenizer`` (the base model, never trained, and its tokenizer) are loaded on
    first use by ``load_model`` (then the torch seed is set to ``seed``): a trial function that
    never touches them costs no model copy.

    ``trial_number`` is the study's trial number, None for a named baseline (``baseline``).
    In a search with rungs (``fidelity.schedule: asha``) the trainer trains from ``resume`` (the
    checkpoint of the rung before, or None) up to ``stop_at`` of its steps and, short of the end,
    leaves the checkpoint of that point in ``checkpoint``.
    """

    plan: Plan
    shape: ModelShape
    data: TaskData
    fidelity: Fidelity
    metric: str
    seed: int
    device: Any
    trial_number: int | None = 0
    baseline: str | None = None
    stop_at: float = 1.0
    resume: bytes | None = None
    load_model: Callable[[], tuple[Any, Any]] | None = field(default=None, repr=False)  # returns (tokenizer, model)
    checkpoint: bytes | None = field(default=None, init=False)
    peft_model: Any = field(default=None, init=False)
    _base: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    @property
    def model(self):
        return self._loaded()[1]

    @property
    def tokenizer(self):
        return self._loaded()[0]

    def _loaded(self) -> tuple[Any, Any]:
        if self._base is None:
            import torch

            self._base = self.load_model()
            torch.manual_seed(self.seed)  # after loading: the first load in a process draws random numbers, a cached one none
        return self._base

    def apply_plan(self):
        """Wrap ``model`` with peft according to the plan and move it to the trial's device."""
        if self.peft_model is None:
            self.peft_model = apply_plan(self.model, self.plan, self.shape).to(self.device)
        return self.peft_model


def load_trainer(spec: str | None) -> Callable[[TrialContext], dict]:
    """Import ``package.module:function`` (the built-in trainer when ``spec`` is None)."""
    module_name, _, function_name = (spec or BUILTIN_TRAINER).partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _quiet() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def run_trial(request: TrialRequest, data: TaskData, trainer: Callable[[TrialContext], dict] | None = None) -> TrialResult:
    """Run one trial in this process and report its quality and resource use.

    The trainable count is the plan's (``count_trainable``); a trial whose peft model trains any
    other number of parameters fails.

    ``trainer`` is the trial function; by default the one ``request.trainer`` names.
    """
    import torch

    _quiet()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    shape = model_shape(request.model, request.num_labels)
    torch.manual_seed(request.seed)
    context = TrialContext(
        plan=request.plan, shape=shape, data=data,
        fidelity=request.fidelity, metric=request.metric, seed=request.seed, device=device,
        trial_number=request.trial_number, baseline=request.baseline, stop_at=request.stop_at, resume=request.resume,
        load_model=lambda: load_base(request.model, request.num_labels, request.fidelity.base_dtype),
    )
    trainer = trainer or load_trainer(request.trainer)
    started = time.perf_counter()
    metrics = checked_metrics(evaluate(context, context.model.to(device)) if request.zero_shot else trainer(context),
                              request.metric)
    seconds = time.perf_counter() - started
    test_quality = None
    if request.score_test and data.test_texts and context.peft_model is not None:
        metrics.update(checked_metrics(evaluate_test(context, context.peft_model), f"test_{request.metric}"))
        test_quality = metrics[f"test_{request.metric}"]
    if context.peft_model is not None:
        params = count_trainable(request.plan, shape)
        measured = sum(p.numel() for p in context.peft_model.parameters() if p.requires_grad)
        if measured != params:
            raise RuntimeError(f"peft trains {measured} parameters but the plan counts {params}")
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    files: dict[str, bytes] = {}
    if request.save_adapter and request.final_rung and context.peft_model is not None:
        with tempfile.TemporaryDirectory() as tmp:
            save_adapter(context.peft_model, tmp)
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return TrialResult(
        quality=metrics[request.metric],
        metrics=metrics,
        train_seconds=seconds,
        peak_memory_mb=peak_mb,
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        adapter_files=files,
        node=_node(),
        checkpoint=context.checkpoint,
        test_quality=test_quality,
    )


def _node() -> str:
    """This machine's host name, and the Ray node this process runs on where it runs in Ray."""
    import socket

    name = socket.gethostname()
    try:
        import ray

        if ray.is_initialized():
            return f"{name} (ray node {ray.get_runtime_context().get_node_id()[:8]})"
    except Exception:  # no Ray here, or no runtime context: the host name says enough
        pass
    return name


def checked_metrics(returned, metric: str) -> dict[str, float]:
    """A trial function's metrics as floats; ``TrialOutcomeError`` if they hold no finite ``metric``."""
    if not isinstance(returned, dict):
        raise TrialOutcomeError("no metrics", f"the trial function returned {type(returned).__name__}, not a dict of metrics")
    metrics = {}
    for key, value in returned.items():
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TrialOutcomeError("non-numeric metric", f"the trial function returned {key}={value!r}, not a number") from None
    if metric not in metrics:
        raise TrialOutcomeError("missing metric", f"the trial function returned {sorted(metrics)} but not the task metric '{metric}'")
    if not math.isfinite(metrics[metric]):
        raise TrialOutcomeError("non-finite quality", f"the trial's {metric} is {metrics[metric]}")
    return metrics


class TrialWorker:
    """A long-lived worker (a Ray actor): holds the task data and the base model between trials."""

    def __init__(self, data: TaskData, num_threads: int = 1, trainer: Callable | None = None):
        import torch

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        torch.set_num_threads(max(1, num_threads))
        self.data = data
        self.trainer = trainer

    def run(self, request: TrialRequest) -> TrialResult:
        return run_trial(request, self.data, self.trainer)

    def node(self) -> str:
        """The machine and Ray node this worker runs on."""
        return _node()
