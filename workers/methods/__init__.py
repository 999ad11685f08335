"""PEFT methods, one file each; importing this package registers every one of them (and autopeft's
own tuners with peft, so that peft loads their adapters)."""

import importlib
import pkgutil

from .base import (
    METHODS,
    POOLED,
    Method,
    baseline_plan,
    every_baseline,
    method,
    ordered,
    register_method,
    searchable,
    split_pooled,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "POOLED", "Method", "baseline_plan", "every_baseline", "method", "ordered", "register_method", "searchable", "split_pooled"]
