"""Trial functions used by the tests through the job file's ``trainer:`` field."""

import os

from autopeft.workers.train import evaluate, train_and_evaluate
from autopeft.workers.trial import TrialWorker


def fails_on_odd_trials(context):
    if context.trial_number % 2 == 1:
        raise ValueError(f"boom in trial {context.trial_number}")
    return train_and_evaluate(context)


def always_fails(context):
    raise ValueError(f"no plan trains in trial {context.trial_number}")


def dies_in_first_trial(context):
    if context.trial_number == 0:
        os._exit(3)
    return train_and_evaluate(context)


def dies_once_in_each_trial(context):
    """The worker process dies the first time each trial runs (a lost node), then the trial trains."""
    import tempfile
    from pathlib import Path

    marker = Path(tempfile.gettempdir()) / f"autopeft-test-died-{context.seed}-{context.trial_number}"
    if context.trial_number is not None and not marker.exists():
        marker.touch()
        os._exit(9)
    return train_and_evaluate(context)


def baselines_fail_once(context):
    """Each named baseline fails the first time it trains (say, out of memory beside another job), then trains."""
    import tempfile
    from pathlib import Path

    marker = Path(tempfile.gettempdir()) / f"autopeft-test-baseline-failed-{context.seed}-{context.baseline}"
    if context.baseline is not None and not marker.exists():
        marker.touch()
        raise RuntimeError(f"{context.baseline} could not train this time")
    return train_and_evaluate(context)


def hangs_in_first_trial(context):
    if context.trial_number == 0:
        import time

        time.sleep(3600)
    return train_and_evaluate(context)


def sleeps(context):
    import time

    time.sleep(600)
    return train_and_evaluate(context)


def trains_slowly(context):
    import time

    time.sleep(8)
    return {**train_and_evaluate(context), "niceness": os.nice(0)}


def returns_nan_on_odd_trials(context):
    metrics = train_and_evaluate(context)
    return {**metrics, "accuracy": float("nan")} if context.trial_number % 2 else metrics


def out_of_memory_below_top_layer(context):
    """A device too small for a backward pass through every layer: a plan that trains anything
    below the top layer runs out of memory, as torch reports it."""
    import torch

    from autopeft.workers.memory import lowest_trained_layer

    if lowest_trained_layer(context.plan, context.shape) < context.shape.num_layers - 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return train_and_evaluate(context)


def evaluate_untrained(context):
    """A user's own loop in its smallest form: wrap with the plan, score without training."""
    model = context.apply_plan()
    return {**evaluate(context, model), "custom": 1.0}


def scores_at_once(context):
    """A trial that takes no time: it scores without building a model."""
    return {"accuracy": 0.5}


def reports_its_niceness(context):
    """A trial that scores at once and reports the niceness of the process it ran in."""
    return {"accuracy": 0.5, "niceness": os.nice(0)}


class StartsSlowly(TrialWorker):
    """A trial worker that takes 30 s to start (imports on a busy machine, a node still joining)."""

    def __init__(self, *args):
        import time

        time.sleep(30)
        super().__init__(*args)


def scores_by_plan(context):
    """A trial that takes no time: a score of its own for each plan, without building a model."""
    import zlib

    return {"accuracy": 0.5 + zlib.crc32(context.plan.describe().encode()) % 400 / 1000}
