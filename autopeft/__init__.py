"""autopeft: search parameter-efficient fine-tuning configurations, quality versus trainable parameters.

Importing ``autopeft`` registers its own PEFT methods with peft, so that peft loads their adapters:
at once where peft is already imported, otherwise as soon as peft is (importing ``autopeft`` alone
loads neither peft nor torch, so that the command line answers at once).
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
import sys
from importlib import import_module
from importlib.abc import MetaPathFinder
from importlib.util import find_spec

for _variable, _value in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("RAY_USAGE_STATS_ENABLED", "0"), ("USE_HUB_KERNELS", "NO")):
    os.environ.setdefault(_variable, _value)

_METHODS = "autopeft.workers.methods"  # importing it registers the bottleneck and prefix peft methods


class _RegisterAfterPeft(MetaPathFinder):
    """Registers autopeft's peft methods once peft has been imported: it hands out peft's own spec, whose loader runs
    peft's module and then imports ``_METHODS``. Finding peft's spec alone (``importlib.util.find_spec``) registers
    nothing."""

    def find_spec(self, name, path=None, target=None):
        if name != "peft":
            return None
        sys.meta_path.remove(self)  # so that the search below finds peft's spec, not this finder's
        try:
            spec = find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run_peft = spec.loader.exec_module

        def exec_module(module):
            run_peft(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            import_module(_METHODS)

        spec.loader.exec_module = exec_module
        return spec


if "peft" in sys.modules:
    import_module(_METHODS)
else:
    sys.meta_path.insert(0, _RegisterAfterPeft())

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
