"""Pareto fronts of quality (maximised) versus trainable parameters (minimised): pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def counted(n: int, noun: str) -> str:
    """``1 point``, ``3 points``: a count with its noun in the number the count needs."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def per_point(seeds: int) -> str:
    """How a re-evaluated front was measured, for its title: ``3 new seeds per point, mean ± std``, or with one
    seed, which has no spread, ``1 new seed per point``."""
    return f"{counted(seeds, 'new seed')} per point" + (", mean ± std" if seeds > 1 else "")


def mean_std(mean: float, std: float | None) -> str:
    """``0.6933 ± 0.0801``, or ``0.6933`` where there is no std (a search trial, or a point re-trained with one seed)."""
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


@dataclass(frozen=True)
class Point:
    """One finished trial as the front sees it; a re-evaluated one has the mean quality of its ``seeds`` and their ``std``,
    and where the task has test examples the mean and std of their scores on them (``test``, ``test_std``)."""

    trial: int
    quality: float
    params: int
    pct: float
    plan: str = ""
    std: float | None = None
    seeds: int = 0
    test: float | None = None  # the mean over its seeds of the task metric on the test examples
    test_std: float | None = None
    floored: int = 0  # of its seeds, those that scored at or under the quality floor: they learned nothing

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """The hypervolume reference point: worst acceptable quality, largest acceptable parameter count."""

    quality: float
    params: int


def dominates(a: Point, b: Point) -> bool:
    return a.quality >= b.quality and a.params <= b.params and (a.quality > b.quality or a.params < b.params)


def dominated_by(front: Iterable[Point], point: Point) -> Point | None:
    """The cheapest point of ``front`` that dominates ``point`` (a baseline, say); None when none does."""
    return min((p for p in front if dominates(p, point)), key=lambda p: p.params, default=None)


def beaten_by(front: list[Point], baselines: dict[str, Point]) -> dict[str, Point | None]:
    """Each baseline, cheapest first, with the cheapest point of ``front`` that dominates it; None where none does."""
    return {name: dominated_by(front, p) for name, p in sorted(baselines.items(), key=lambda item: item[1].params)}


def beaten_text(front: list[Point], baselines: dict[str, Point], floor: float) -> str:
    """Which baselines the front dominates (each with the cheapest trial that does), which it does not, and which scored
    at or under the quality ``floor``: they learned nothing, so they are no trade-off the front lacks."""
    by = beaten_by(front, baselines)
    beaten = [f"{name} (by trial {p.trial})" for name, p in by.items() if p is not None]
    kept = [name for name, p in by.items() if p is None and baselines[name].quality > floor]
    floored = [name for name, p in by.items() if p is None and baselines[name].quality <= floor]
    return "; ".join([*(["dominated by the front: " + ", ".join(beaten)] if beaten else []),
                      *(["not dominated: " + ", ".join(kept)] if kept else []),
                      *(["at or under the quality floor (learned nothing): " + ", ".join(floored)] if floored else [])])


def off_the_front(front: Iterable[Point], final: Sequence[Point], floor: float) -> str:
    """Which points of the search's ``front`` the re-evaluation (``final``: every re-evaluated trial, its quality the
    mean over seeds) put off the re-evaluated front, cheapest first, each with its mean ± std and why; empty when none."""
    final_front = pareto_front(final, floor)
    on, searched = {p.trial for p in final_front}, {p.trial for p in front}

    def why(p: Point) -> str:
        if p.quality <= floor:
            return f"at or under the quality floor {floor:.4f}"
        by = dominated_by(final_front, p)  # else the same quality and size as a point kept on the front
        return f"dominated by trial {by.trial}" if by is not None else "the same as trial " + str(
            next(q.trial for q in final_front if (q.quality, q.params) == (p.quality, p.params)))

    left = [f"trial {p.trial} ({mean_std(p.quality, p.std)}, {p.params:,} trainable; {why(p)})"
            for p in sorted(final, key=lambda p: p.params) if p.trial in searched and p.trial not in on]
    return "off the front on re-evaluation: " + ", ".join(left) if left else ""


def floored_text(final: Sequence[Point], baselines: dict[str, Point]) -> str:
    """The re-evaluated trials (``final``) and baselines some of whose seeds learned nothing, each with how many of its
    seeds; empty when none. Their means count those seeds: such a plan does not train reliably as it is."""
    named = [(f"trial {p.trial}", p) for p in sorted(final, key=lambda p: (p.params, p.trial))]
    named += sorted(baselines.items(), key=lambda item: item[1].params)
    told = [f"{label} ({p.floored} of {p.seeds})" for label, p in named if p.floored]
    if not told:
        return ""
    return (f"seeds that learned nothing (at or under the quality floor): {', '.join(told)}; the means count them: "
            "a plan that collapses in some trainings does not train reliably at its learning rate")


def pareto_front(points: Iterable[Point], floor: float | None = None) -> list[Point]:
    """Non-dominated points, from the smallest to the largest; ties keep the earliest trial.

    With ``floor`` (the reference's quality), only the points above it: the front a user is shown. A
    point at or under the floor scores no better than the majority label or the base model, however
    few parameters it trains, and adds nothing to the hypervolume.
    """
    ordered = sorted((p for p in points if floor is None or p.quality > floor), key=lambda p: (p.params, -p.quality, p.trial))
    front: list[Point] = []
    for point in ordered:
        if not front or point.quality > front[-1].quality:
            front.append(point)
    return front


def nondominated_fronts(points: Iterable[Point], count: int | None = None) -> list[list[Point]]:
    """Non-dominated sorting: the front, then the front of what is left, and so on (the first ``count`` of them)."""
    remaining, fronts = list(points), []
    while remaining and (count is None or len(fronts) < count):
        front = pareto_front(remaining)
        chosen = {id(p) for p in front}
        remaining = [p for p in remaining if id(p) not in chosen]
        fronts.append(front)
    return fronts


def hypervolume(points: Iterable[Point], reference: Reference) -> float:
    """Area dominated by ``points`` in (quality, params / reference.params) and bounded by ``reference``.

    Points at or beyond the reference add nothing. The result lies in [0, 1 - quality floor]
    for a metric bounded by 1.
    """
    inside = [p for p in pareto_front(points) if p.quality > reference.quality and p.params < reference.params]
    area, previous_quality = 0.0, reference.quality
    for point in inside:  # ascending params, ascending quality
        width = 1.0 - point.params / reference.params
        area += (point.quality - previous_quality) * width
        previous_quality = point.quality
    return area


def knee(front: Sequence[Point]) -> Point:
    """The front point farthest from the line joining its two ends (in normalised units)."""
    if len(front) <= 2:
        return front[-1]
    lo, hi = front[0], front[-1]
    q_span = (hi.quality - lo.quality) or 1.0
    p_span = (hi.params - lo.params) or 1.0

    def distance(p: Point) -> float:
        x, y = (p.params - lo.params) / p_span, (p.quality - lo.quality) / q_span
        return y - x  # above the diagonal = better than the straight trade-off

    return max(front, key=distance)


PICKS = "best | knee | smallest-above=<quality> | trial=<number> | baseline=<name>"
PICK_FORMS = re.compile(r"best|knee|smallest-above=[0-9.eE+-]+|trial=\d+|baseline=.+")  # what PICKS says, as a pattern


def pick(front: Sequence[Point], how: str, points: Sequence[Point] | None = None) -> Point:
    """Choose a point of the front: ``best`` quality, the ``knee``, ``smallest-above=Q``, or
    ``trial=N``: trial N, on the front or among ``points`` (every finished point)."""
    if not PICK_FORMS.fullmatch(how):
        raise ValueError(f"unknown pick '{how}'; use {PICKS}")
    if not front:
        raise ValueError("the front is empty: no trial has finished yet")
    if how == "best":
        return max(front, key=lambda p: (p.quality, -p.params))
    if how == "knee":
        return knee(front)
    match = re.fullmatch(r"smallest-above=([0-9.eE+-]+)", how)
    if match:
        floor = float(match.group(1))
        above = [p for p in front if p.quality >= floor]
        if not above:
            best = max(p.quality for p in front)
            raise ValueError(f"no point reaches quality {floor}; the best is {best:.4f}")
        return min(above, key=lambda p: (p.params, -p.quality))
    match = re.fullmatch(r"trial=(\d+)", how)
    if match:
        number = int(match.group(1))
        for point in [*front, *(points or ())]:
            if point.trial == number:
                return point
        raise ValueError(f"trial {number} has no finished result; the front's trials are "
                         f"{', '.join(str(p.trial) for p in sorted(front, key=lambda p: p.trial))}")
    raise ValueError(f"unknown pick '{how}'; use {PICKS}")
