"""A search as one self-contained HTML page: its state, the Pareto chart, the hypervolume trace, the
placement of the front, the front (re-evaluated too), the baselines and every trial."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from autopeft.record.pareto import (
    beaten_text,
    counted,
    floored_text,
    mean_std,
    off_the_front,
    per_point,
)


@dataclass
class TrialRow:
    trial: int
    state: str  # finished, failed, skipped, running, interrupted, waiting (after a rung), pruned, queued
    quality: float | None
    params: int | None
    plan: str
    seconds: float | None = None
    note: str = ""


@dataclass
class ReportData:
    name: str
    metric: str
    status: str
    summary: str  # one line: trials done, failures, front size, hypervolume
    reference: object
    points: Sequence
    front: Sequence
    baselines: dict
    trials: list[TrialRow]
    final_front: Sequence = ()
    final_points: Sequence = ()  # every re-evaluated trial, on that front or not
    final_baselines: dict = field(default_factory=dict)
    charts: dict[str, bytes | str] = field(default_factory=dict)  # title -> PNG, or an SVG drawn inline


STYLE = """tr:target{background:#fff3bf}body{font-family:system-ui,sans-serif;margin:2em;color:#212529;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}td,th{border-bottom:1px solid #dee2e6;padding:3px 8px;
text-align:right}td.l,th.l{text-align:left}h1{margin-bottom:.2em}.muted{color:#6c757d}img{max-width:100%;margin:.5em 0}"""


def _quality(p) -> str:
    return mean_std(p.quality, getattr(p, "std", None))


def _points_table(rows: Sequence, metric: str, label: str = "trial", names: Sequence[str] | None = None) -> str:
    """Points and their quality; where any has a score on the test examples, a column with it."""
    tested = any(getattr(p, "test", None) is not None for p in rows)

    def test(p) -> str:
        if not tested:
            return ""
        return "<td>-</td>" if p.test is None else f"<td>{mean_std(p.test, p.test_std)}</td>"

    head = (f"<tr><th>{label}</th><th>{html.escape(metric)}</th>" + (f"<th>test {html.escape(metric)}</th>" if tested else "")
            + "<th>trainable</th><th>% of base</th><th class=l>plan</th></tr>")
    body = "".join(
        f"<tr><td>{html.escape(names[i]) if names else p.trial}</td><td>{_quality(p)}</td>{test(p)}<td>{p.params:,}</td>"
        f"<td>{p.pct:.4f}</td><td class=l>{html.escape(p.plan)}</td></tr>" for i, p in enumerate(rows))
    return f"<table>{head}{body}</table>"


def _trials_table(rows: list[TrialRow], metric: str) -> str:
    head = (f"<tr><th>trial</th><th class=l>state</th><th>{html.escape(metric)}</th><th>trainable</th><th>seconds</th>"
            "<th class=l>plan</th><th class=l>note</th></tr>")

    def cell(value, fmt):
        return "" if value is None else format(value, fmt)

    body = "".join(
        f"<tr id=trial-{r.trial}><td>{r.trial}</td><td class=l>{r.state}</td><td>{cell(r.quality, '.4f')}</td><td>{cell(r.params, ',')}</td>"
        f"<td>{cell(r.seconds, '.0f')}</td><td class=l>{html.escape(r.plan)}</td><td class=l>{html.escape(r.note)}</td></tr>"
        for r in rows)
    return f"<table>{head}{body}</table>"


def report_html(data: ReportData) -> str:
    """The page; charts are embedded (PNG data, inline SVG), so the file stands alone."""
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>autopeft: {html.escape(data.name)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>autopeft search '{html.escape(data.name)}'</h1>",
             f"<p><b>{html.escape(data.status)}</b><br>{html.escape(data.summary)}<br><span class=muted>reference point: "
             f"{html.escape(data.metric)} {data.reference.quality:.4f}, {data.reference.params:,} trainable parameters</span></p>"]
    for title, chart in data.charts.items():
        parts.append(f"<h2>{html.escape(title)}</h2>" + (chart if isinstance(chart, str) else f"<img alt='{html.escape(title)}' "
                     f"src='data:image/png;base64,{base64.b64encode(chart).decode()}'>"))
    parts.append(f"<h2>Pareto front ({counted(len(data.front), 'point')})</h2>")
    parts.append(_points_table(data.front, data.metric) if data.front else
                 f"<p>no trial has scored above the quality floor ({data.reference.quality:.4f}) yet</p>")
    if data.final_front or data.final_points:
        seeds = max(p.seeds for p in [*data.final_front, *data.final_points])
        parts.append(f"<h2>Re-evaluated front ({per_point(seeds)})</h2>")
        parts.append(_points_table(data.final_front, data.metric))
        for said in (off_the_front(data.front, data.final_points, data.reference.quality),
                     floored_text(data.final_points, data.final_baselines)):
            if said:
                parts.append(f"<p>{html.escape(said)}</p>")
    for title, baselines, front in (("Baselines", data.baselines, data.front),
                                    ("Re-evaluated baselines", data.final_baselines, data.final_front)):
        if baselines:
            ordered = sorted(baselines.items(), key=lambda item: item[1].params)
            parts.append(f"<h2>{title}</h2>")
            parts.append(_points_table([p for _, p in ordered], data.metric, "baseline", [n for n, _ in ordered]))
            parts.append(f"<p>{html.escape(beaten_text(front, baselines, data.reference.quality))}</p>")
    parts.append(f"<h2>Every trial ({len(data.trials)})</h2>")
    parts.append(_trials_table(data.trials, data.metric))
    parts.append("</body></html>")
    return "\n".join(parts)
