"""Where the front puts its modules: for each method and layer, how many front points train that
method in that layer, and each method's share of the front's trainable parameters."""

from __future__ import annotations

from collections.abc import Sequence

from autopeft.dashboards.pareto_chart import figure_png
from autopeft.workers.methods import method


def placement(plans: Sequence, shape) -> tuple[list[str], list[list[int]], dict[str, int]]:
    """(methods, counts, parameters): ``counts[m][layer]`` is how many of ``plans`` train method
    ``methods[m]`` in that layer; ``parameters`` the parameters each method trains over all plans."""
    methods: list[str] = []
    for plan in plans:
        methods.extend(n for n in plan.methods if n not in methods)
    counts = [[0] * shape.num_layers for _ in methods]
    parameters = dict.fromkeys(methods, 0)
    for plan in plans:
        for part in plan.parts:
            name = type(part).method
            descriptor = method(name)
            for layer in descriptor.layers(part, shape):
                counts[methods.index(name)][layer] += 1
            parameters[name] += descriptor.count(part, shape)
    return methods, counts, parameters


def placement_png(plans: Sequence, shape, title: str) -> bytes:
    """A heat map of ``placement``: methods by layers, each cell the number of front points."""
    methods, counts, parameters = placement(plans, shape)
    total = sum(parameters.values()) or 1

    def draw(ax) -> None:
        if not methods:
            ax.text(0.5, 0.5, "no front yet", ha="center", va="center")
            ax.set_axis_off()
            return
        image = ax.imshow(counts, aspect="auto", cmap="Oranges", vmin=0, vmax=max(1, len(plans)))
        ax.set_xticks(range(shape.num_layers))
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels([f"{n} ({100 * parameters[n] / total:.0f}% of params)" for n in methods])
        for m, row in enumerate(counts):
            for layer, value in enumerate(row):
                if value:
                    ax.text(layer, m, str(value), ha="center", va="center", fontsize=7)
        ax.set_title(f"{title}: front points training each method, by layer (of {len(plans)})")
        ax.figure.colorbar(image, ax=ax, fraction=0.03)

    return figure_png(draw, size=(8, 1.6 + 0.5 * max(1, len(methods))))
