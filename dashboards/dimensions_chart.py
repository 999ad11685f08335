"""Parallel coordinates of the searched dimensions: one line per finished trial across every
dimension (its choice index, scaled to 0..1), coloured by the trial's quality."""

from __future__ import annotations

from collections.abc import Sequence

from autopeft.dashboards.pareto_chart import figure_png


def dimensions_png(trials: Sequence[tuple[dict[str, int], float]], levels: dict[str, int], title: str, metric: str) -> bytes:
    """``trials``: (choice indices by dimension, quality); ``levels``: each dimension's number of choices."""
    names = list(levels)

    def draw(ax) -> None:
        import matplotlib

        if not trials or not names:
            ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center")
            ax.set_axis_off()
            return
        qualities = [q for _, q in trials]
        low, high = min(qualities), max(qualities)
        norm = matplotlib.colors.Normalize(vmin=low, vmax=high if high > low else low + 1e-9)
        cmap = matplotlib.colormaps["viridis"]
        for params, quality in sorted(trials, key=lambda item: item[1]):  # the best drawn last, on top
            ys = [params.get(n, 0) / max(1, levels[n] - 1) for n in names]
            ax.plot(range(len(names)), ys, color=cmap(norm(quality)), alpha=0.7, lw=1)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks([0, 1])
        ax.set_yticklabels(["first choice", "last choice"], fontsize=8)
        ax.set_xlim(-0.3, len(names) - 0.7)
        ax.set_title(f"{title}: searched dimensions of every finished trial")
        bar = ax.figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03)
        bar.set_label(metric)
        ax.grid(alpha=0.3, axis="x")

    return figure_png(draw, size=(max(7.0, 0.35 * len(names) + 3), 4.8))


def trial_dimensions(completed: Sequence) -> tuple[list[tuple[dict[str, int], float]], dict[str, int]]:
    """From finished Optuna trials: (their choice indices, quality), and each dimension's choice count."""
    levels: dict[str, int] = {}
    rows = []
    for t in completed:
        for name, dist in t.distributions.items():
            levels[name] = max(levels.get(name, 0), int(dist.high) - int(dist.low) + 1)
        rows.append(({n: int(v) for n, v in t.params.items()}, float(t.values[0])))
    return rows, levels
