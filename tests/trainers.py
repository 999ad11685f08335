"""Trial functions used by the tests through the job file's ``trainer:`` field."""

import os

from autopeft.workers.train import evaluate, train_and_evaluate


def fails_on_odd_trials(context):
    if context.trial_number % 2 == 1:
        raise ValueError(f"boom in trial {context.trial_number}")
    return train_and_evaluate(context)


def dies_in_first_trial(context):
    if context.trial_number == 0:
        os._exit(3)
    return train_and_evaluate(context)


def evaluate_untrained(context):
    """A user's own loop in its smallest form: wrap with the plan, score without training."""
    model = context.apply_plan()
    return {**evaluate(context, model), "custom": 1.0}
