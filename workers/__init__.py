"""Trial side of autopeft: what runs on a Ray worker.

Builds the base model, applies a Plan with peft, trains at the trial's fidelity,
evaluates and measures. Nothing here imports the driver package ``autopeft``.
"""
