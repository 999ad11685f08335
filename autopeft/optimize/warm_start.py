"""Warm start: the configurations on an earlier search's front, mapped onto this search's space.

A point is a dict of choice indices by dimension name. Mapping one onto another space:

- a per-layer bit (``<module>.layer.<j>`` or ``layer.<j>``) takes the bit of the earlier layer at
  the same relative depth: layer ``j`` of ``L`` new layers reads layer ``floor((j + 1/2) L' / L)``
  of the ``L'`` earlier ones, so a 6-layer front maps onto 30 layers in blocks of five;
- any other dimension of the same name keeps its choice index (clipped to the new choices);
- a dimension the earlier space lacks takes its middle choice.
"""

from __future__ import annotations

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


def map_params(params: dict[str, int], names: Sequence[str], levels: Sequence[int]) -> dict[str, int]:
    """``params`` of an earlier space as choice indices of the space with ``names`` and ``levels``."""
    earlier, now = _layer_counts(params), _layer_counts(names)
    mapped = {}
    for name, k in zip(names, levels, strict=True):
        match = _LAYER.match(name)
        source = name
        if match and match["prefix"] in earlier:
            j, old = int(match["index"]), earlier[match["prefix"]]
            source = f"{match['prefix']}.{min(old - 1, int((j + 0.5) * old / now[match['prefix']]))}"
        value = params.get(source)
        mapped[name] = (k - 1) // 2 if value is None else int(min(max(int(value), 0), k - 1))
    return mapped


def warm_points(source: Path, names: Sequence[str], levels: Sequence[int], limit: int) -> list[dict[str, int]]:
    """Up to ``limit`` points of the earlier search's front above its quality floor, mapped onto this
    space, spread from its smallest plan to its largest; the same mapped point only once."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.at(source, FIELD) as record:
        return _front_points(record, source, names, levels, limit)


def _front_points(record, source: Path, names: Sequence[str], levels: Sequence[int], limit: int) -> list[dict[str, int]]:
    from autopeft.record.pareto import pareto_front

    if not record.started:
        raise UserError(FIELD, f"the search in '{source}' has not started", "give a search that has finished trials")
    floor = record.reference.quality
    front = pareto_front(record.finished_points(), floor)
    if not front:
        raise UserError(FIELD, f"the search in '{source}' has no trial above its quality floor",
                        "start from a search whose front has points")
    earlier = record.study.trials[front[0].trial].params
    if not any(n in earlier for n in names if not _LAYER.match(n)):
        raise UserError(FIELD, f"the search in '{source}' shares no searched dimension with this space",
                        "start from a search over the same space file")
    picks = np.unique(np.linspace(0, len(front) - 1, min(limit, len(front))).round().astype(int))
    points: list[dict[str, int]] = []
    for i in picks:
        point = map_params(record.study.trials[front[i].trial].params, names, levels)
        if point not in points:
            points.append(point)
    return points
