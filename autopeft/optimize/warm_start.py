"""Warm start: the configurations on an earlier search's front, mapped onto this search's space.

A point is a dict of choice indices by dimension name. Mapping one onto another space:

- a per-layer bit (``<module>.layer.<j>`` or ``layer.<j>``) takes the bit of the earlier layer at
  the same relative depth: layer ``j`` of ``L`` new layers reads layer ``floor((j + 1/2) L' / L)``
  of the ``L'`` earlier ones, so a 6-layer front maps onto 30 layers in blocks of five;
- any other dimension of the same name keeps its value where the two spaces' choices share one
  (a rank of 8 stays 8 when the ranks offered change): the same value, else the nearest on a log
  scale, off (0) only from off. Choices that share no value (sizes given as fractions of another
  width, rates searched around another job's rate) keep their position: the choice index, clipped
  to the new choices;
- a dimension the earlier space lacks takes its middle choice.

The front is the re-evaluated one (trials' means over their seeds) where the earlier search
re-trained its front, as its user saw it; else the search's own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autopeft.errors import UserError

FIELD = "optimizer.warm_start"
_LAYER = re.compile(r"^(?P<prefix>(?:.+\.)?layer)\.(?P<index>\d+)$")


def _layer_counts(names) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        match = _LAYER.match(name)
        if match:
            counts[match["prefix"]] = max(counts.get(match["prefix"], 0), int(match["index"]) + 1)
    return counts


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


def _shares_a_value(earlier: Sequence, choices: Sequence) -> bool:
    return any(c in choices for c in earlier if c not in (0, False))


def map_params(params: dict[str, int], dimensions: Sequence[tuple[str, Sequence]],
               earlier_choices: dict[str, Sequence] | None = None) -> dict[str, int]:
    """``params`` of an earlier space (``earlier_choices``: its choices by dimension, where known) as choice indices
    of the space of ``dimensions`` (name and choices)."""
    names = [name for name, _ in dimensions]
    earlier, now = _layer_counts(params), _layer_counts(names)
    earlier_choices = earlier_choices or {}
    mapped = {}
    for name, choices in dimensions:
        k = len(choices)
        match = _LAYER.match(name)
        source = name
        if match and match["prefix"] in earlier:
            j, old = int(match["index"]), earlier[match["prefix"]]
            source = f"{match['prefix']}.{min(old - 1, int((j + 0.5) * old / now[match['prefix']]))}"
        value = params.get(source)
        if value is None:
            mapped[name] = (k - 1) // 2
            continue
        index = int(min(max(int(value), 0), k - 1))
        before = earlier_choices.get(source)
        if before is not None and 0 <= int(value) < len(before) and _shares_a_value(before, choices):
            by_value = _by_value(before[int(value)], choices)
            index = index if by_value is None else by_value
        mapped[name] = index
    return mapped


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
    earlier = record.study.trials[front[0].trial].params
    if not any(n in earlier for n, _ in dimensions if not _LAYER.match(n)):
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
