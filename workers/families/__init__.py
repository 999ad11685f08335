"""Model families, one file each; importing this package registers every one of them."""

import importlib
import pkgutil

from .base import BLOCKS, BY_NAME, FAMILIES, FUSED_INTO, MODULE_GROUPS, Family, recognise, register_family

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BLOCKS", "BY_NAME", "FAMILIES", "FUSED_INTO", "MODULE_GROUPS", "Family", "recognise", "register_family"]
