"""The Pareto chart: every finished trial, the front as a step line, the reference point."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence


def figure_png(draw: Callable, size: tuple[float, float] = (7, 4.5)) -> bytes:
    """A PNG of one matplotlib axes that ``draw(ax)`` fills."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=110)
    draw(ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def pareto_png(points: Sequence, front: Sequence, reference, title: str, metric: str,
               baselines: dict | None = None) -> bytes:
    """A PNG of quality versus trainable parameters (log scale), front highlighted, named baselines marked."""

    def draw(ax) -> None:
        ax.scatter([p.params for p in points], [p.quality for p in points], s=22, color="#9aa5b1", label="trials", zorder=2)
        if front:
            xs = [p.params for p in front]
            ys = [p.quality for p in front]
            ax.step(xs + [reference.params], ys + [ys[-1]], where="post", color="#d9480f", lw=1.5, zorder=3)
            ax.scatter(xs, ys, s=40, color="#d9480f", label="Pareto front", zorder=4)
            for p in front:
                ax.annotate(f"#{p.trial}", (p.params, p.quality), textcoords="offset points", xytext=(4, -10), fontsize=7)
        for i, (name, p) in enumerate((baselines or {}).items()):
            ax.scatter([p.params], [p.quality], s=60, marker="D", color="#1c7ed6", zorder=5,
                       label="baselines" if i == 0 else None)
            ax.annotate(name, (p.params, p.quality), textcoords="offset points", xytext=(5, 4), fontsize=7, color="#1c7ed6")
        ax.axhline(reference.quality, color="#495057", ls=":", lw=1, label=f"reference ({reference.quality:.3f})")
        ax.axvline(reference.params, color="#495057", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(metric)
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right", fontsize=8)

    return figure_png(draw)
