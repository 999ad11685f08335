"""Warm start: the configurations on an earlier search's front, mapped onto this search's space.

A point is a dict of choice indices by dimension name. Mapping one onto another space, by name:

- a dimension of a numbered family (a per-layer bit ``<module>.layer.<j>`` or ``layer.<j>``, a
  rank per block of layers ``<module>.<group>.rank.<j>``) reads the earlier one at the same
  relative depth: ``j`` of ``L`` new ones reads ``floor((j + 1/2) L' / L)`` of the ``L'`` earlier
  ones, so a 6-layer front maps onto 30 layers in blocks of five. A rank for all layers reads the
  largest of the earlier ranks of the blocks the plan has layers in (a rank of a block whose
  layers are all left out trains nothing), and ranks per block read a rank for all layers;
- a per-layer bit of one module reads the bits shared by every module, and a shared bit is on
  where any module the earlier plan used was on;
- a method chosen per module group (``per_group.<group>``: ``lora:8``, ``loha:4`` or ``off``) is
  the rank of that method's own dimension of the group (``lora.<group>.rank``, or the largest of its
  blocks), both ways: the nearest size of the same method, off where the plan has none of the
  methods offered;
- a dimension keeps its value where the two spaces' choices share one (a rank of 8 stays 8 when
  the ranks offered change) or are lists of different lengths: the same value, else the nearest
  on a log scale, off (0) only from off. Lists of as many choices that share no value (sizes
  given as the same fractions of another width, rates searched around another job's rate) keep
  their position: the choice index;
- a dimension the earlier space lacks is off where it can be (a module the earlier plans did not
  have) or plain (the LoRA variant), else takes its middle choice (a learning rate: the job's own).

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
_PER_GROUP = "per_group."
_SIZED = re.compile(r"^(?P<method>[a-z0-9_]+):(?P<size>\d+)$")  # a per-group choice: method and size


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
    sized = _SIZED.match(value) if isinstance(value, str) else None
    if sized:  # another size of the same method, else off
        return _nearest_size(sized["method"], int(sized["size"]), choices)
    if not _positive(value):
        return None
    positive = [(abs(math.log(c) - math.log(value)), i) for i, c in enumerate(choices) if _positive(c)]
    return min(positive)[1] if positive else None


def _nearest_size(method: str, size: float, choices: Sequence) -> int | None:
    """The index of the per-group choice of ``method`` nearest ``size`` (log scale); of ``off`` where none is offered."""
    sizes = [(abs(math.log(int(m["size"])) - math.log(size)), i) for i, c in enumerate(choices)
             if isinstance(c, str) and (m := _SIZED.match(c)) and m["method"] == method]
    if sizes:
        return min(sizes)[1]
    return list(choices).index("off") if "off" in choices else None


class _Earlier:
    """One earlier point: its choice indices and, where the earlier space is known, their values."""

    def __init__(self, params: dict[str, int], choices: dict[str, Sequence]):
        self.params, self.choices = dict(params), dict(choices)
        for name, options in choices.items():  # a per-group choice, also as the rank of each method it offers
            group = name[len(_PER_GROUP):]
            if name.startswith(_PER_GROUP) and name in params:
                chosen = _SIZED.match(str(self.value(name)))
                for method in {sized["method"] for sized in map(_SIZED.match, map(str, options)) if sized}:
                    size = int(chosen["size"]) if chosen and chosen["method"] == method else 0
                    self.params[f"{method}.{group}.rank"], self.choices[f"{method}.{group}.rank"] = 0, [size]
        self.families = _families(self.params)

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

    def used_blocks(self, name: str) -> list[str]:
        """The ranks per block ``name.<k>`` (``lora.query.rank.0`` ...) of the blocks of layers where the earlier plan
        has its method's layers on (every block where it has none): a rank of a block left out trains nothing."""
        from autopeft.workers.methods.ranked import layer_blocks

        ranks = [f"{name}.{k}" for k in range(self.families[name])]
        bits = next((b for b in (f"{name.split('.')[0]}.layer", "layer") if b in self.families), None)
        if bits is None:
            return ranks
        blocks = layer_blocks(self.families[bits], len(ranks))
        used = [r for r, block in zip(ranks, blocks, strict=True) if any(int(self.params[f"{bits}.{j}"]) for j in block)]
        return used or ranks

    def rank(self, name: str):
        """The rank of ``name`` (``lora.query.rank``) for all layers, or the largest of its used blocks'; None where the
        earlier space lacks it."""
        if name in self.params:
            return self.value(name)
        if name in self.families:
            return max(self.value(n) for n in self.used_blocks(name))
        return None

    def per_group(self, group: str, choices: Sequence) -> int | None:
        """The choice of ``group`` among per-group ``choices``: the method offered that the earlier plan gives the largest
        rank there, at the nearest size; off where it gives none; None where the earlier space has none of them."""
        offered = dict.fromkeys(sized["method"] for sized in map(_SIZED.match, map(str, choices)) if sized)
        ranks = [(r, m) for m in offered if (r := self.rank(f"{m}.{group}.rank")) is not None]
        if not ranks:
            return None
        rank, method = max(ranks, key=lambda r: r[0] if _positive(r[0]) else 0)
        return _nearest_size(method, rank, choices) if _positive(rank) else list(choices).index("off")

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
        elif name in earlier.params:
            mapped[name] = earlier.index_in(name, choices)
        elif match and match["prefix"] in earlier.params:  # ranks per block from a rank for all layers
            mapped[name] = earlier.index_in(match["prefix"], choices)
        elif name in earlier.families:  # a rank for all layers from ranks per block: the largest of them
            mapped[name] = max(earlier.index_in(n, choices) for n in earlier.used_blocks(name))
        elif name.startswith(_PER_GROUP) and (chosen := earlier.per_group(name[len(_PER_GROUP):], choices)) is not None:
            mapped[name] = chosen
        else:
            bit = (earlier.layer_bit(match["prefix"], int(match["index"]), now[match["prefix"]])
                   if match and _is_layer_bits(match["prefix"]) else None)
            mapped[name] = bit if bit is not None else 0 if choices[0] in (*_OFF, "plain") else (len(choices) - 1) // 2
    return mapped


_RANK = re.compile(r"^[a-z0-9_]+\.(?P<group>[a-z0-9_]+)\.rank$")


def _module_dimensions(names) -> set[str]:
    """The searched dimensions of modules among ``names`` and their families, a method's rank of a group and a per-group
    choice of it both as ``rank of <group>``."""
    keys = set()
    for name in {*names, *_families(names)}:
        numbered = _NUMBERED.match(name)
        if _is_layer_bits(numbered["prefix"] if numbered else name) or name.startswith("learning_rate"):
            continue
        rank = _RANK.match(name)
        keys.add(f"rank of {rank['group']}" if rank else f"rank of {name[len(_PER_GROUP):]}"
                 if name.startswith(_PER_GROUP) else name)
    return keys


def shares_a_dimension(params: dict[str, int], names: Sequence[str]) -> bool:
    """Whether an earlier point and a space of ``names`` share a searched dimension of a module (not a per-layer bit
    or a learning rate); a method chosen per module group shares the group's ranks."""
    return bool(_module_dimensions(params) & _module_dimensions(names))


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
