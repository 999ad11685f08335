"""What a PEFT method is to autopeft: one descriptor per method, registered by name.

A descriptor holds everything about its method in one place: its entry in a space file
(``modules.<name>``) and the dimensions that entry adds, its part of a Plan, the exact number of
parameters that part trains, the peft config that builds it, its named baselines and whether it
merges into the base weights on export. The method's name is the one vocabulary used from the
space file through the Plan, MLflow and the export.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ..types import SpaceError

if TYPE_CHECKING:
    from ..families.base import Family
    from ..models import ModelShape
    from ..plan import Plan


class Method:
    """The base descriptor; a method overrides what applies to it."""

    name: ClassVar[str]
    title: ClassVar[str]  # as people write it: LoRA, IA3
    part: ClassVar[type]  # the frozen dataclass that is this method's part of a Plan
    space: ClassVar[type | None] = None  # the pydantic model of ``modules.<name>`` in a space file
    order: ClassVar[int]  # where the method comes in a plan: describe, apply, save
    peft_type: ClassVar[str | None] = None  # the peft config this method's part becomes (parts may share one)
    parameter_prefix: ClassVar[str | None] = None  # how the peft tuner names its trainable tensors
    mergeable: ClassVar[bool] = True  # merges into the base weights (merge_and_unload)
    requires: ClassVar[frozenset[str]] = frozenset()  # blocks of the model family it wraps
    learning_rate_scale: ClassVar[float] = 1.0  # its parameters train at the job's (LoRA's) rate times this
    learning_rate_range: ClassVar[tuple[float, float] | None] = None  # scales to search (None: a quarter to 4 x the scale)
    linear_only: ClassVar[bool] = False  # peft's tuner wraps torch Linear layers only (no Conv1D)
    baselines: ClassVar[dict[str, Callable[[ModelShape], tuple]]] = {}  # name -> the parts of its plan

    # -- the space file ---------------------------------------------------------------------------

    def check(self, spec, shape: ModelShape, alone: bool) -> None:
        """Raise ``SpaceError`` if the space entry cannot work on this model (``alone``: the only module)."""

    def dimensions(self, spec, shape: ModelShape) -> list[tuple[str, tuple]]:
        """The dimensions (name, choices) this entry adds; one choice means a fixed setting."""
        return []

    def produces(self, spec) -> list[str]:
        """The methods whose parts this entry decodes into (itself, or those chosen per group)."""
        return [self.name]

    def learning_rate_choices(self, count: int) -> tuple[float, ...]:
        """``count`` scales spaced evenly in log between the ends of this method's range."""
        low, high = self.learning_rate_range or (self.learning_rate_scale / 4, self.learning_rate_scale * 4)
        return tuple(float(f"{low * (high / low) ** (k / (count - 1)):.3g}") for k in range(count))

    def groups(self, spec, shape: ModelShape) -> set[str]:
        """The module groups whose linear layers this entry wraps (two methods may not share one)."""
        return set()

    def part_groups(self, part) -> set[str]:
        """The module groups ``part`` wraps."""
        return set()

    def decode(self, spec, value: dict[str, Any], layers: tuple[int, ...], shape: ModelShape):
        """This method's part of the plan for a point's ``value`` (None: nothing trains)."""
        raise NotImplementedError

    def smallest(self, spec, shape: ModelShape, layers: tuple[int, ...]):
        """The cheapest part that trains something in ``layers`` (None if the entry never trains)."""
        raise NotImplementedError

    # -- the plan ---------------------------------------------------------------------------------

    def count(self, part, shape: ModelShape) -> int:
        """Exact number of parameters ``part`` trains."""
        raise NotImplementedError

    def layers(self, part, shape: ModelShape) -> set[int]:
        """The layers ``part`` trains something in (every layer unless a method says otherwise)."""
        return set(range(shape.num_layers))

    def peft_kwargs(self, part, shape: ModelShape) -> dict[str, Any]:
        """The fields of the ``peft_type`` config that build ``part``."""
        raise NotImplementedError

    def describe(self, part) -> str:
        raise NotImplementedError

    # -- building and saving ----------------------------------------------------------------------

    def after_build(self, model, part) -> None:
        """Called once ``model`` is wrapped, before it trains (PiSSA keeps its starting factors)."""

    def rewrites_export(self, part) -> bool:
        """Whether ``export`` changes what this part saves."""
        return False

    def export(self, part, model, tensors: dict, config: dict) -> None:
        """Rewrite the saved ``tensors`` and this method's saved ``config`` (in place) so that the adapter
        loads on the unchanged base model."""

    # -- training ---------------------------------------------------------------------------------

    def before_training(self, model, part, total_steps: int) -> None:
        """Called once the trial knows how many optimizer steps it takes (AdaLoRA's schedule)."""

    def after_step(self, model, part, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared (AdaLoRA's rank allocation)."""

    def to_dict(self, part) -> dict[str, Any]:
        return dataclasses.asdict(part)

    def from_dict(self, data: dict[str, Any]):
        return self.part(**{k: _tuples(v) for k, v in data.items()})

    def from_legacy(self, data: dict[str, Any]):
        """This method's part of a plan stored by autopeft 0.1 (one flat dict), or None."""
        return None

    def fits(self, family: Family, part=None) -> bool:
        """Whether this method (and ``part`` of it, when given) fits models of ``family``."""
        return (not (self.linear_only and family.fan_in_fan_out) and self.requires <= family.blocks.keys()
                and (part is None or self.part_groups(part) <= family.groups.keys()))

    def unfit_reason(self, family: Family) -> str:
        """Why this method does not fit models of ``family``."""
        from ..families import BLOCKS

        if self.linear_only and family.fan_in_fan_out:
            return f"peft's {self.title} wraps torch Linear layers, and {family.name} models use Conv1D"
        return "it needs " + "; ".join(BLOCKS[b] for b in sorted(self.requires - family.blocks.keys()))


def check_sizes(sizes: list[int], what: str) -> None:
    """Choices of a size or rank: at least one, distinct, none negative."""
    if not sizes:
        raise ValueError(f"{what} has no choices")
    if any(s < 0 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"{what}: choices must be distinct and >= 0")


def known_groups(groups):
    """``groups`` (a list, or a mapping keyed by group) if every one is a module group; else ValueError."""
    from ..families import MODULE_GROUPS

    for group in groups:
        if group not in MODULE_GROUPS:
            raise ValueError(f"unknown module group '{group}'; known: {', '.join(MODULE_GROUPS)}")
    return groups


def check_groups(groups, shape: ModelShape, field: str) -> None:
    """Raise ``SpaceError`` for a module group the model's family does not have."""
    family = shape.family
    for group in groups:
        if group not in family.groups:
            raise SpaceError(f"{field}.{group}" if isinstance(groups, dict) else field,
                             f"'{group}' is not a module group of {family.name} models",
                             f"use some of {', '.join(family.groups)}")


def query_and_value(shape: ModelShape) -> tuple[str, ...]:
    """Where the classic baselines go: the attention's query and value, or the fused projection that
    holds them (GPT-2's c_attn, as peft's own default)."""
    return shape.family.holders(("query", "value"))


def every_layer(shape: ModelShape, size: int) -> tuple[tuple[int, int], ...]:
    """(layer, size) for every layer of the model, size at least 1."""
    return tuple((i, max(1, size)) for i in range(shape.num_layers))


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry under its name."""
    if method.name in METHODS:
        raise ValueError(f"a method named '{method.name}' is registered already")
    METHODS[method.name] = method
    return method


def method(name: str) -> Method:
    return METHODS[name]


def ordered(names) -> list[str]:
    return sorted(names, key=lambda n: METHODS[n].order)


def searchable() -> list[str]:
    """Method names a space file may use under ``modules``, in plan order."""
    return [n for n in ordered(METHODS) if METHODS[n].space is not None]


def every_baseline() -> dict[str, Method]:
    """The method that owns each named baseline, by baseline name."""
    return {name: m for m in (METHODS[n] for n in ordered(METHODS)) for name in m.baselines}


POOLED = "+pooler"  # a baseline's name with this suffix: the same plan, its pooler trained with the head
_POOLED = re.compile(r"^(?P<base>.+?)\+pooler(?:-r(?P<rank>[1-9][0-9]*))?$")


def split_pooled(name: str) -> tuple[str, dict]:
    """A baseline's name as (its base baseline, the ``Plan`` fields of its pooler): ``<name>+pooler`` trains
    the whole pooler with the head, ``<name>+pooler-r8`` a LoRA of rank 8 on it."""
    match = _POOLED.match(name)
    if match is None:
        return name, {}
    return match["base"], {"pooler_rank": int(match["rank"])} if match["rank"] else {"pooler": True}


def baseline_plan(name: str, shape: ModelShape) -> Plan:
    """The plan of a named baseline for this model (each method's parameters train at its own rate);
    ``<name>+pooler`` trains the model's pooler with the head as well, ``<name>+pooler-r8`` a LoRA on it.
    Without either, the pooler is as ``ModelShape.pooler_default`` has it."""
    from ..plan import Plan

    base, pooler = split_pooled(name)
    return Plan.of(*every_baseline()[base].baselines[base](shape), **(pooler or shape.pooler_default))
