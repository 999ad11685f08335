"""What a search looks like now, read from its study alone: for ``autopeft watch``, from any machine
that reaches the study's store, without touching the search."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from autopeft.errors import UserError
from autopeft.record.lease import live_driver
from autopeft.record.pareto import Point, Reference, hypervolume, pareto_front
from autopeft.record.study import DEVICE, ERROR, FAILURE, INTERRUPTED, PLAN_SUMMARY, SKIPPED, States, StudyRecord


@dataclass(frozen=True)
class Running:
    trial: int
    plan: str
    seconds: float  # since it started


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
    devices: dict[str, int]  # finished trials by the device they trained on
    driver: dict | None

    @property
    def finished(self) -> bool:
        return self.driver is None and self.done >= self.trials and self.baselines_done >= self.baselines

    @property
    def status(self) -> str:
        if self.driver is not None:
            return f"running: driver process {self.driver.get('pid')} on {self.driver.get('host')} since {self.driver.get('since')}"
        if self.finished:
            return "finished"
        return "stopped before its budget: submit the same job again to resume it"


def _reason(attrs: dict) -> str:
    if FAILURE in attrs:
        return attrs[FAILURE]
    lines = [line for line in str(attrs.get(ERROR, "")).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "error"


def snapshot(record: StudyRecord, now: datetime | None = None) -> Snapshot:
    """The search in ``record`` now; a ``UserError`` when the study holds no search this version reads."""
    if not record.started or not record.job:
        raise UserError("watch", f"the study '{record.study.study_name}' holds no search this version of autopeft can read",
                        "watch it with the autopeft version that started it")
    job = record.job
    trials = record.study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == States.RUNNING and SKIPPED not in t.user_attrs]
    now = now or datetime.now()
    failures = [Failure(t.number, _reason(t.user_attrs)) for t in trials
                if t.state == States.FAIL and not ({SKIPPED, INTERRUPTED} & set(t.user_attrs))]
    done, failed = record.done()
    points = record.finished_points()
    reference = record.reference
    front = pareto_front(points)
    devices: dict[str, int] = {}
    for t in record.completed():
        device = t.user_attrs.get(DEVICE, "?")
        devices[device] = devices.get(device, 0) + 1
    return Snapshot(
        name=record.study.study_name, metric=job.get("task", {}).get("metric", "quality"),
        trials=int(job.get("budget", {}).get("trials", done)), done=done, failed=failed,
        baselines=len(job.get("baselines") or []), baselines_done=len(record.baselines),
        running=[Running(t.number, t.user_attrs.get(PLAN_SUMMARY, "(being proposed)"),
                         (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0) for t in running],
        failures=failures, front=front, reference=reference, hypervolume=hypervolume(points, reference),
        best=max((p.quality for p in points), default=None), devices=devices, driver=live_driver(record.study))
