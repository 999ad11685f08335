"""Trial side of autopeft: what runs on a Ray worker (installed as ``autopeft.workers``).

Builds the base model, applies a Plan with peft, trains at the trial's fidelity, evaluates and
measures. One file per PEFT method (``methods/``) and per model family (``families/``). Nothing
here imports the driver's orchestration (job, space, optimize, run, record).
"""
