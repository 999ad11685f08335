"""The hypervolume trace: the hypervolume of the first k finished trials, for every k."""

from __future__ import annotations

from collections.abc import Sequence

from autopeft.dashboards.pareto_chart import figure_png
from autopeft.record.pareto import hypervolume


def hypervolume_trace(points: Sequence, reference) -> list[float]:
    """Hypervolume after each finished trial, in trial order."""
    ordered = sorted(points, key=lambda p: p.trial)
    return [hypervolume(ordered[: k + 1], reference) for k in range(len(ordered))]


def hypervolume_png(points: Sequence, reference, title: str) -> bytes:
    """A PNG of the hypervolume against the number of finished trials."""
    trace = hypervolume_trace(points, reference)

    def draw(ax) -> None:
        ax.plot(range(1, len(trace) + 1), trace, marker="o", ms=3, color="#d9480f")
        ax.set_xlabel("finished trials")
        ax.set_ylabel("hypervolume")
        ax.set_title(f"{title}: hypervolume by trial")
        ax.grid(alpha=0.3)

    return figure_png(draw)
