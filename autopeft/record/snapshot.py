"""What a search looks like now, read from its study alone: for ``autopeft watch``, from any machine
that reaches the study's store, without touching the search."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from autopeft.errors import UserError
from autopeft.record.lease import live_driver
from autopeft.record.pareto import Point, Reference, counted, hypervolume, pareto_front
from autopeft.record.study import (
    DEVICE,
    INTERRUPTED,
    NODE,
    PLAN_SUMMARY,
    RUNG,
    RUNG_QUALITY,
    SKIPPED,
    States,
    StudyRecord,
    after_rung,
    failure_reason,
)


@dataclass(frozen=True)
class Running:
    trial: int | None  # None: a baseline or a re-evaluation, named in ``plan``
    plan: str
    seconds: float  # since it started
    node: str = ""  # the machine and Ray node of its worker


@dataclass(frozen=True)
class Failure:
    trial: int
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """A search at one moment. ``driver`` is the lease of the process searching it now (None: it is
    not running: finished, or stopped before its budget)."""

    name: str
    metric: str
    trials: int  # the budget
    done: int  # trials that count against it, failed ones included
    failed: int
    baselines: int  # named baselines the job asks for
    baselines_done: int
    running: list[Running]
    failures: list[Failure]
    front: list[Point]
    reference: Reference
    hypervolume: float
    best: float | None
    devices: dict[str, int]  # finished trials by the machine and device they trained on
    driver: dict | None
    waiting: int = 0  # a search with rungs: trials paused after a rung, to be sent on or pruned
    pruned: int = 0
    rungs: tuple[float, ...] = ()  # a search with rungs: its fractions of the training
    silent_rungs: list[tuple[int, int, float]] = field(default_factory=list)  # rungs so far that told no plan apart
    baseline_points: dict[str, Point] = field(default_factory=dict)  # the finished baselines, by name
    failed_baselines: dict[str, str] = field(default_factory=dict)  # the job's baselines that failed: why, by name
    final: Reevaluation | None = None  # the job re-evaluates its front with new seeds once the search is done
    points: list[Point] = field(default_factory=list)  # the finished trials

    @property
    def searched(self) -> bool:
        """Whether every trial and baseline of the budget is done (the re-evaluation, if any, comes after)."""
        return self.done >= self.trials and self.baselines_done >= self.baselines

    @property
    def finished(self) -> bool:
        return self.driver is None and self.searched and (self.final is None or self.final.over)

    @property
    def status(self) -> str:
        if self.driver is not None:
            return f"running: driver process {self.driver.get('pid')} on {self.driver.get('host')} since {self.driver.get('since')}"
        if self.finished:
            baselines, finals = len(self.failed_baselines), self.final.failed if self.final else 0
            failed = " and ".join(counted(n, what) for n, what in ((baselines, "baseline"), (finals, "re-evaluation")) if n)
            return (f"finished; {failed} failed: submit the same job again to retry "
                    f"{'them' if baselines + finals > 1 else 'it'}") if failed else "finished"
        if self.searched:
            return "stopped before its re-evaluation finished: submit the same job again to resume it"
        return "stopped before its budget: submit the same job again to resume it"


@dataclass(frozen=True)
class Reevaluation:
    """The re-evaluation of a search's front: ``total`` trainings (its targets times ``seeds``) once the search is done,
    ``done`` of them finished and ``failed`` failed so far; ``front`` and ``baselines`` average the finished ones,
    ``points`` every re-evaluated trial (on that front or not)."""

    seeds: int
    total: int
    done: int
    failed: int
    front: list[Point]
    baselines: dict[str, Point]
    hypervolume: float
    points: list[Point] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.done + self.failed >= self.total


def snapshot(record: StudyRecord, now: datetime | None = None) -> Snapshot:
    """The search in ``record`` now; a ``UserError`` when the study holds no search this version reads."""
    if not record.started or not record.job:
        raise UserError("watch", f"the study '{record.study.study_name}' holds no search this version of autopeft can read",
                        "watch it with the autopeft version that started it")
    job = record.job
    fidelity = job.get("fidelity") or {}
    rungs = tuple(fidelity.get("rungs") or ()) if fidelity.get("schedule") == "asha" else ()
    trials = record.study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == States.RUNNING and SKIPPED not in t.user_attrs]
    waiting = [t for t in running if after_rung(t.user_attrs)]
    running = [t for t in running if not after_rung(t.user_attrs)]
    now = now or datetime.now()
    failures = [Failure(t.number, failure_reason(t.user_attrs)) for t in trials
                if t.state == States.FAIL and not ({SKIPPED, INTERRUPTED} & set(t.user_attrs))]
    done, failed = record.done()
    budget = int(job.get("budget", {}).get("trials", done))
    named = set(job.get("baselines") or [])
    points = record.finished_points()
    reference = record.reference
    front = pareto_front(points, reference.quality)
    devices: dict[str, int] = {}
    for t in record.completed():
        device = " ".join(filter(None, (t.user_attrs.get(NODE), t.user_attrs.get(DEVICE, "?"))))
        devices[device] = devices.get(device, 0) + 1
    driver = live_driver(record.study)
    others = [Running(None, f"{label}: {w['plan']}", max(0.0, now.timestamp() - w["since"]), w.get("node", ""))
              for label, w in record.running_work.items()] if driver is not None else []
    snap = Snapshot(
        name=record.study.study_name, metric=job.get("task", {}).get("metric", "quality"),
        trials=budget, done=done, failed=failed,
        baselines=len(named), baselines_done=len(named & set(record.baselines)),
        running=[Running(t.number, _rung_text(t.user_attrs) + t.user_attrs.get(PLAN_SUMMARY, "(being proposed)"),
                         (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0, t.user_attrs.get(NODE, ""))
                 for t in running] + others,
        failures=failures, front=front, reference=reference, hypervolume=hypervolume(points, reference),
        best=max((p.quality for p in points), default=None), devices=devices, driver=driver,
        waiting=len(waiting), pruned=sum(1 for t in trials if t.state == States.PRUNED), rungs=rungs,
        silent_rungs=record.rungs_told_nothing(fidelity["reduction_factor"]) if rungs else [],
        baseline_points=record.baseline_points(), points=points,
        failed_baselines=record.failed_baselines(named))
    return replace(snap, final=_reevaluation(record, snap.searched, named, points))


def _reevaluation(record: StudyRecord, searched: bool, named: set[str], points: list[Point]) -> Reevaluation | None:
    """Where the re-evaluation stands (None when the job asks for none); its total is known once the search is done.
    ``named``: the job's baselines (one left out of the job on resume is not re-evaluated); ``points``: the finished ones."""
    spec = record.job.get("final") or {}
    seeds = int(spec.get("seeds") or 0)
    final = record.final
    if not seeds and not final:
        return None
    targets = [target for target, which in record.final_targets(int(spec.get("fronts") or 1), points)
               if isinstance(which, int) or which in named] if searched and seeds else []
    outcomes = [r for target in targets for seed, r in final.get(target, {}).items() if int(seed) <= seeds]
    done = sum(1 for r in outcomes if "quality" in r)
    points, baselines = record.final_points(points, final)
    return Reevaluation(seeds=seeds, total=len(targets) * seeds, done=done, failed=len(outcomes) - done,
                        front=pareto_front(points, record.reference.quality), baselines=baselines,
                        hypervolume=hypervolume(points, record.reference), points=points)


def _rung_text(attrs: dict) -> str:
    return f"(rung {attrs[RUNG] + 1}) " if attrs.get(RUNG) else ""


def _trial_rows(record: StudyRecord) -> list:
    from autopeft.dashboards.report import TrialRow
    from autopeft.record.study import TRAIN_SECONDS

    rows = []
    for t in record.study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        state = ("skipped" if SKIPPED in attrs else "interrupted" if INTERRUPTED in attrs else
                 "waiting" if t.state == States.RUNNING and after_rung(attrs) else
                 {States.COMPLETE: "finished", States.FAIL: "failed", States.RUNNING: "running",
                 States.WAITING: "queued"}.get(t.state, t.state.name.lower()))
        values = t.values if state == "finished" else None
        note = attrs[SKIPPED] if state == "skipped" else failure_reason(attrs) if state == "failed" else ""
        if state in ("waiting", "pruned"):
            note = f"after rung {len(attrs[RUNG_QUALITY])}: {attrs[RUNG_QUALITY][-1]:.4f}"
        rows.append(TrialRow(t.number, state, values[0] if values else None, int(values[1]) if values else None,
                             attrs.get(PLAN_SUMMARY, ""), attrs.get(TRAIN_SECONDS), note))
    return rows


def report_page(record: StudyRecord, stopping: bool = False) -> str:
    """The search in ``record`` as one self-contained HTML page (``autopeft report``); ``stopping``: the page of
    the driver that is stopping, whose lease is still held, with the status the search has once it has stopped."""
    from autopeft.dashboards.dimensions_chart import dimensions_png, trial_dimensions
    from autopeft.dashboards.hypervolume_chart import hypervolume_png
    from autopeft.dashboards.pareto_chart import pareto_svg
    from autopeft.dashboards.placement_chart import placement_png
    from autopeft.dashboards.report import ReportData, report_html
    from autopeft.workers.models import model_shape

    snap = snapshot(record)
    if stopping:
        snap = replace(snap, driver=None)
    points, baselines = snap.points, snap.baseline_points
    charts: dict[str, bytes | str] = {"Quality against trainable parameters (hover a point; click it for its row)": pareto_svg(
        points, snap.front, snap.reference, snap.name, snap.metric, baselines, link="#trial-{n}")}
    if points:
        charts["Hypervolume by trial"] = hypervolume_png(points, snap.reference, snap.name)
    try:
        shape = model_shape(record.job["model"], record.num_labels)
    except Exception:  # the model is not on this machine: the page goes without the placement chart
        shape = None
    if shape is not None and snap.front:
        charts["Where the front trains"] = placement_png([record.plan_of(p.trial) for p in snap.front], shape, snap.name)
    if points:
        charts["Searched dimensions"] = dimensions_png(*trial_dimensions(record.completed()), snap.name, snap.metric)
    summary = (f"{snap.done} of {snap.trials} trials, {snap.failed} failed; front {counted(len(snap.front), 'point')}; "
               f"hypervolume {snap.hypervolume:.4f}" + (f"; best {snap.metric} {snap.best:.4f}" if snap.best is not None else ""))
    return report_html(ReportData(
        name=snap.name, metric=snap.metric, status=snap.status, summary=summary, reference=snap.reference, points=points,
        front=snap.front, baselines=baselines, trials=_trial_rows(record), final_front=snap.final.front if snap.final else [],
        final_points=snap.final.points if snap.final else [], final_baselines=snap.final.baselines if snap.final else {}, charts=charts))
