"""autopeft: search parameter-efficient fine-tuning configurations, quality versus trainable parameters."""

from autopeft.api import export, read_front, submit
from autopeft.job import JobSpec, load_job

__all__ = ["JobSpec", "export", "load_job", "read_front", "submit"]
__version__ = "0.1.0"
