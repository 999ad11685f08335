"""Registering autopeft's own tuners as peft methods."""

from __future__ import annotations

from peft.utils import PeftType

OWN_TYPES: set[str] = set()  # peft types that are autopeft's: their adapters load after ``import autopeft``


def add_peft_type(name: str) -> None:
    """Add a member to peft's ``PeftType`` enum: peft wants one for every registered method."""
    OWN_TYPES.add(name)
    if name in PeftType.__members__:
        return
    member = str.__new__(PeftType, name)
    member._name_, member._value_ = name, name
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)


def register(name: str, config_cls, model_cls) -> None:
    """``peft.utils.register_peft_method`` once per process for method ``name`` (lower case)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method

    add_peft_type(name.upper())
    if PeftType[name.upper()] not in PEFT_TYPE_TO_CONFIG_MAPPING:
        register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls)


def create_or_update(tuner, layer_cls, target, target_name, parent, adapter_name: str, *sizes) -> None:
    """peft's ``_create_and_replace`` for a tuner layer built as ``layer_cls(base, adapter_name, *sizes)``."""
    if isinstance(target, layer_cls):
        target.update_layer(adapter_name, *sizes)
        return
    new_module = layer_cls(target, adapter_name, *sizes)
    if adapter_name not in tuner.active_adapters:
        new_module.requires_grad_(False)
    tuner._replace_module(parent, target_name, new_module, target)
