"""Warm start: the configurations on an earlier search's front, mapped onto this search's space.

A point is a dict of choice indices by dimension name. Mapping one onto another space, by name:

- a dimension of a numbered family (a per-layer bit ``<module>.layer.<j>`` or ``layer.<j>``, a
  rank per block of layers ``<module>.<group>.rank.<j>``) reads the earlier one at the same
  relative depth: ``j`` of ``L`` new ones reads ``floor((j + 1/2) L' / L)`` of the ``L'`` earlier
  ones, so a 6-layer front maps onto 30 layers in blocks of five. A rank for all layers reads the
  largest of the earlier blocks' ranks, and ranks per block read a rank for all layers;
- a per-layer bit of one module reads the bits shared by every module, and a shared bit is on
  where any module the earlier plan used was on;
- a dimension keeps its value where the two spaces' choices share one (a rank of 8 stays 8 when
  the ranks offered change) or are lists of different lengths: the same value, else the nearest
  on a log scale, off (0) only from off. Lists of as many choices that share no value (sizes
  given as the same fractions of another width, rates searched around another job's rate) keep
  their position: the choice index;
- a dimension the earlier space lacks is off where it can be (a module the earlier plans did not
  have), else takes its middle choice (a learning rate: the job's own).

The front is the re-evaluated one (trials' means over their seeds) where the earlier search
re-trained its front, as its user saw it; else the search's own.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autopeft.errors import UserError

FIELD = "optimizer.warm_start"
_NUMBERED = re.compile(r"^(?P<prefix>.+)\.(?P<index>\d+)$")
_OFF = (0, False, "off")


def _families(names) -> dict[str, int]:
    """Numbered families among ``names`` (``lora.layer`` for ``lora.layer.0`` ...), by their size."""
    counts: dict[str, int] = {}
    for name in names:
        match = _NUMBERED.match(name)
        if match:
            counts[match["prefix"]] = max(counts.get(match["prefix"], 0), int(match["index"]) + 1)
    return counts


def _is_layer_bits(prefix: str) -> bool:
    return prefix == "layer" or prefix.endswith(".layer")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _by_value(value, choices: Sequence) -> int | None:
    """The index of ``value`` among ``choices``, or of the nearest positive choice (log scale) to a positive value;
    None where the value cannot be placed among them."""
    if value in choices:
        return list(choices).index(value)
    if not _positive(value):
        return None
    positive = [(abs(math.log(c) - math.log(value)), i) for i, c in enumerate(choices) if _positive(c)]
    return min(positive)[1] if positive else None


class _Earlier:
    """One earlier point: its choice indices and, where the earlier space is known, their values."""

    def __init__(self, params: dict[str, int], choices: dict[str, Sequence]):
        self.params, self.choices = params, choices
        self.families = _families(params)

    def value(self, name: str):
        before = self.choices.get(name)
        index = int(self.params[name])
        return before[index] if before is not None and 0 <= index < len(before) else index

    def index_in(self, name: str, choices: Sequence) -> int:
        """The earlier choice of ``name`` as an index of ``choices``: by value where the two lists share one or differ
        in length, else (lists of as many choices, none shared) by position."""
        index = int(min(max(int(self.params[name]), 0), len(choices) - 1))
        before = self.choices.get(name)
        if before is not None and (len(before) != len(choices) or any(c in choices for c in before if c not in _OFF)):
            by_value = _by_value(self.value(name), choices)
            return index if by_value is None else by_value
        return index

    def at_depth(self, prefix: str, j: int, count: int) -> str:
        old = self.families[prefix]
        return f"{prefix}.{min(old - 1, int((j + 0.5) * old / count))}"

    def used(self, module: str) -> bool:
        """Whether the earlier plan has ``module``: one of its non-layer dimensions is on."""
        own = [n for n in self.params if (n == module or n.startswith(f"{module}.")) and not n.startswith(f"{module}.layer.")]
        return any(self.value(n) not in _OFF for n in own)

    @functools.cached_property
    def used_modules_bits(self) -> list[str]:
        """The per-layer bits of each module the earlier plan has (``lora.layer``, ...)."""
        return [p for p in self.families if _is_layer_bits(p) and p != "layer" and self.used(p[: -len(".layer")])]

    def layer_bit(self, prefix: str, j: int, count: int) -> int | None:
        """The bit of layer ``j`` of ``count`` for the per-layer bits ``prefix``, from the earlier bits of another form."""
        if prefix != "layer" and "layer" in self.families:
            return int(self.params[self.at_depth("layer", j, count)])
        if prefix == "layer" and self.used_modules_bits:
            return max(int(self.params[self.at_depth(p, j, count)]) for p in self.used_modules_bits)
        return None


def map_params(params: dict[str, int], dimensions: Sequence[tuple[str, Sequence]],
               earlier_choices: dict[str, Sequence] | None = None) -> dict[str, int]:
    """``params`` of an earlier space (``earlier_choices``: its choices by dimension, where known) as choice indices
    of the space of ``dimensions`` (name and choices)."""
    earlier = _Earlier(params, earlier_choices or {})
    now = _families(name for name, _ in dimensions)
    mapped = {}
    for name, choices in dimensions:
        match = _NUMBERED.match(name)
        if match and match["prefix"] in earlier.families:
            mapped[name] = earlier.index_in(earlier.at_depth(match["prefix"], int(match["index"]), now[match["prefix"]]),
                                            choices)
        elif name in params:
            mapped[name] = earlier.index_in(name, choices)
        elif match and match["prefix"] in params:  # ranks per block from a rank for all layers
            mapped[name] = earlier.index_in(match["prefix"], choices)
        elif name in earlier.families:  # a rank for all layers from ranks per block: the largest of them
            mapped[name] = max(earlier.index_in(f"{name}.{i}", choices) for i in range(earlier.families[name]))
        else:
            bit = (earlier.layer_bit(match["prefix"], int(match["index"]), now[match["prefix"]])
                   if match and _is_layer_bits(match["prefix"]) else None)
            mapped[name] = bit if bit is not None else 0 if choices[0] in _OFF else (len(choices) - 1) // 2
    return mapped


def shares_a_dimension(params: dict[str, int], names: Sequence[str]) -> bool:
    """Whether an earlier point and a space of ``names`` share a searched dimension of a module (not a per-layer bit
    or a learning rate)."""
    earlier, now = set(params) | set(_families(params)), set(names) | set(_families(names))
    return any(not _is_layer_bits(n) and not n.startswith("learning_rate") for n in earlier & now)


def warm_points(source: Path, dimensions: Sequence[tuple[str, Sequence]], limit: int) -> list[dict[str, int]]:
    """Up to ``limit`` points of the earlier search's front above its quality floor, mapped onto the space of
    ``dimensions`` (name and choices), spread from its smallest plan to its largest; the same mapped point only once."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.at(source, FIELD) as record:
        return _front_points(record, source, dimensions, limit)


def _front_points(record, source: Path, dimensions: Sequence[tuple[str, Sequence]], limit: int) -> list[dict[str, int]]:
    from autopeft.record.pareto import pareto_front

    if not record.started:
        raise UserError(FIELD, f"the search in '{source}' has not started", "give a search that has finished trials")
    floor = record.reference.quality
    points = record.finished_points()
    re_evaluated, _ = record.final_points(points)
    front = pareto_front(re_evaluated, floor) or pareto_front(points, floor)
    if not front:
        raise UserError(FIELD, f"the search in '{source}' has no trial above its quality floor",
                        "start from a search whose front has points")
    if not shares_a_dimension(record.study.trials[front[0].trial].params, [n for n, _ in dimensions]):
        raise UserError(FIELD, f"the search in '{source}' shares no searched dimension with this space",
                        "start from a search over the same space file")
    earlier_choices = (record.space or {}).get("dimensions", {})
    picks = np.unique(np.linspace(0, len(front) - 1, min(limit, len(front))).round().astype(int))
    points: list[dict[str, int]] = []
    for i in picks:
        point = map_params(record.study.trials[front[i].trial].params, dimensions, earlier_choices)
        if point not in points:
            points.append(point)
    return points
