"""autopeft: search parameter-efficient fine-tuning configurations, quality versus trainable parameters.

Importing ``autopeft`` registers its own PEFT methods with peft, so that peft loads their adapters.
The public API (``submit``, ``prepare``, ``read_front``, ``read_baselines``, ``export``,
``load_job``, ``load_adapter``, ``JobSpec``) loads on first use: a worker that imports
``autopeft.workers`` does not load the driver.

autopeft reaches no network of its own accord: it turns off MLflow's telemetry, Ray's usage
statistics and transformers' Hub kernels (on a GPU, loading a model would otherwise fetch kernel
code from the Hugging Face Hub, and fail with no network), for itself and the processes it
starts, unless the environment already sets them (``MLFLOW_DISABLE_TELEMETRY=false``,
``RAY_USAGE_STATS_ENABLED=1``, ``USE_HUB_KERNELS=YES``).
"""

import os
from importlib import import_module

for _variable, _value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("RAY_USAGE_STATS_ENABLED", "0"), ("USE_HUB_KERNELS", "NO")):
    os.environ.setdefault(_variable, _value)

import autopeft.workers.methods  # noqa: E402, F401  (registers the bottleneck and prefix peft methods)

_API = {
    "JobSpec": "autopeft.job.spec",
    "load_job": "autopeft.job.load",
    "prepare": "autopeft.api",
    "submit": "autopeft.api",
    "read_front": "autopeft.api",
    "read_baselines": "autopeft.api",
    "export": "autopeft.api",
    "load_adapter": "autopeft.workers.build",
}
__all__ = sorted(_API)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'autopeft' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
