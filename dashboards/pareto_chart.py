"""The Pareto chart: every finished trial, the front as a step line, the reference point."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

from autopeft.record.pareto import mean_std


def figure_png(draw: Callable, size: tuple[float, float] = (7, 4.5)) -> bytes:
    """A PNG of one matplotlib axes that ``draw(ax)`` fills. The figure is matplotlib's own object,
    outside pyplot's global state, so that a search can draw its charts in a thread of their own."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    draw(fig.subplots())
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
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


def pareto_svg(points: Sequence, front: Sequence, reference, title: str, metric: str, baselines: dict | None = None,
               link: str | None = None) -> str:
    """The same chart as an SVG that stands alone: hovering a point shows its trial, quality, count and plan.

    ``link`` (for example ``#trial-{n}``) makes each trial's point a link.
    """
    import html
    import math

    width, height, left, right, top, bottom = 760, 440, 64, 24, 36, 46
    marks = list((baselines or {}).items())
    all_points = list(points) + [p for _, p in marks]
    params = [max(1, p.params) for p in all_points] + [reference.params]
    x_lo, x_hi = math.log10(min(params)) - 0.15, math.log10(max(params)) + 0.15
    qualities = [p.quality for p in all_points] + [reference.quality]
    pad = max(0.01, 0.06 * (max(qualities) - min(qualities)))
    y_lo, y_hi = min(qualities) - pad, max(qualities) + pad

    def x(count: float) -> float:
        return left + (math.log10(max(1, count)) - x_lo) / (x_hi - x_lo) * (width - left - right)

    def y(quality: float) -> float:
        return top + (y_hi - quality) / (y_hi - y_lo) * (height - top - bottom)

    def tip(p, name: str) -> str:
        text = f"{name}\n{metric} {mean_std(p.quality, getattr(p, 'std', None))}"
        return html.escape(f"{text}\n{p.params:,} trainable parameters\n{p.plan}")

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='{width}' height='{height}' "
           "font-family='system-ui,sans-serif' font-size='11'>",
           "<style>.pt{cursor:pointer}.pt:hover{stroke:#212529;stroke-width:2}</style>",
           f"<text x='{width / 2}' y='20' text-anchor='middle' font-size='13'>{html.escape(title)}</text>"]
    for power in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for step in (1, 2, 5):
            value = step * 10**power
            if x_lo <= math.log10(value) <= x_hi:
                px = x(value)
                out.append(f"<line x1='{px:.1f}' x2='{px:.1f}' y1='{top}' y2='{height - bottom}' stroke='#e9ecef'/>")
                if step == 1:
                    out.append(f"<text x='{px:.1f}' y='{height - bottom + 14}' text-anchor='middle'>{value:,}</text>")
    for i in range(6):
        quality = y_lo + (y_hi - y_lo) * i / 5
        py = y(quality)
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{py:.1f}' y2='{py:.1f}' stroke='#e9ecef'/>"
                   f"<text x='{left - 6}' y='{py + 4:.1f}' text-anchor='end'>{quality:.3f}</text>")
    out.append(f"<text x='{(left + width - right) / 2}' y='{height - 8}' text-anchor='middle'>trainable parameters (log)</text>"
               f"<text transform='translate(14 {(top + height - bottom) / 2}) rotate(-90)' text-anchor='middle'>"
               f"{html.escape(metric)}</text>")
    rx, ry = x(reference.params), y(reference.quality)
    out.append(f"<line x1='{left}' x2='{width - right}' y1='{ry:.1f}' y2='{ry:.1f}' stroke='#495057' stroke-dasharray='2 3'/>"
               f"<line x1='{rx:.1f}' x2='{rx:.1f}' y1='{top}' y2='{height - bottom}' stroke='#495057' stroke-dasharray='2 3'/>"
               f"<text x='{rx - 4:.1f}' y='{ry - 4:.1f}' text-anchor='end' fill='#495057'>reference</text>")
    if front:
        steps = []
        for i, p in enumerate(front):
            following = front[i + 1].params if i + 1 < len(front) else reference.params
            steps.append(f"{x(p.params):.1f},{y(p.quality):.1f} {x(following):.1f},{y(p.quality):.1f}")
        out.append(f"<polyline points='{' '.join(steps)}' fill='none' stroke='#d9480f' stroke-width='1.5'/>")
    on_front = {p.trial for p in front}

    def linked(element: str, trial: int) -> str:
        return f"<a href='{html.escape(link.format(n=trial))}'>{element}</a>" if link else element

    for p in sorted(points, key=lambda p: p.trial in on_front):
        colour, radius = ("#d9480f", 5) if p.trial in on_front else ("#9aa5b1", 4)
        dot = (f"<circle class='pt' cx='{x(p.params):.1f}' cy='{y(p.quality):.1f}' r='{radius}' fill='{colour}'>"
               f"<title>{tip(p, f'trial {p.trial}')}</title></circle>")
        out.append(linked(dot, p.trial))
        if p.trial in on_front:
            out.append(f"<text x='{x(p.params) + 6:.1f}' y='{y(p.quality) + 12:.1f}' font-size='9'>#{p.trial}</text>")
    for name, p in marks:
        cx, cy = x(p.params), y(p.quality)
        out.append(f"<path class='pt' d='M{cx:.1f},{cy - 6:.1f} L{cx + 6:.1f},{cy:.1f} L{cx:.1f},{cy + 6:.1f} L{cx - 6:.1f},{cy:.1f} Z' "
                   f"fill='#1c7ed6'><title>{tip(p, f'baseline {name}')}</title></path>"
                   f"<text x='{cx + 8:.1f}' y='{cy - 5:.1f}' fill='#1c7ed6' font-size='10'>{html.escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def pareto_html(svg: str, title: str) -> str:
    """A page that holds only the chart: MLflow's artifact view shows it, hover tooltips included."""
    import html

    return (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
            f"<body style='margin:8px'>{svg}<p style='font:12px system-ui;color:#6c757d'>Hover a point for its trial, "
            "quality, trainable parameters and plan.</p></body></html>")
