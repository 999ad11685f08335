"""autopeft: search parameter-efficient fine-tuning configurations, quality versus trainable parameters."""

import workers.methods  # noqa: F401  (registers the bottleneck and prefix peft methods)
from autopeft.api import export, read_baselines, read_front, submit
from autopeft.job import JobSpec, load_job
from workers.plan import load_adapter

__all__ = ["JobSpec", "export", "load_adapter", "load_job", "read_baselines", "read_front", "submit"]
__version__ = "0.1.0"
