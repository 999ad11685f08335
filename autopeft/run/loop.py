"""Running a search: ask the study for plans, run them on the worker pool, record every result.

``run_search`` sets the search up (study, MLflow parent run, workers) and ``SearchLoop`` runs it:
named baselines first, then trials until the budget is spent. What is in flight is a work item,
a trial of the study or a named baseline, each recording its own outcome.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import sys
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from autopeft.errors import UserError
from autopeft.job.spec import JobSpec
from autopeft.optimize.domain import Domain, MemoryLimit, space_domain
from autopeft.optimize.propose import Proposer
from autopeft.optimize.registry import make_sampler
from autopeft.record.layout import RunLayout
from autopeft.record.lease import HEARTBEAT, Lease, LeaseLost
from autopeft.record.pareto import Point, Reference, counted, hypervolume, pareto_front
from autopeft.record.storage import StoreUnavailable
from autopeft.record.study import (
    BRACKET,
    MLFLOW_RUN,
    NODE,
    OUT_OF_MEMORY,
    PLAN,
    RUNG,
    RUNG_LOSS,
    RUNG_QUALITY,
    TIMEOUT,
    TRAIN_SECONDS,
    WORKER_LOST,
    States,
    StudyRecord,
    after_rung,
)
from autopeft.record.tracking import Tracker, flatten, lasting
from autopeft.run.pool import WorkerPool, init_ray
from autopeft.run.prepare import Prepared, check_resume, prepare
from autopeft.run.rungs import RungTrial, bracket_of, next_promotion
from autopeft.workers.plan import Plan
from autopeft.workers.types import TrialOutcomeError, TrialRequest, TrialResult

log = logging.getLogger("autopeft")
STOPPED = "the search stopped before this trial finished"


@dataclass
class SearchSummary:
    run_dir: Path
    parent_run_id: str
    finished: int
    failed: int
    reference: Reference
    front: list[Point] = field(default_factory=list)
    hypervolume: float = 0.0
    baselines: dict[str, Point] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # failed trials by reason
    final_front: list[Point] = field(default_factory=list)  # re-evaluated over seeds: mean quality and its std
    final_points: list[Point] = field(default_factory=list)  # every re-evaluated trial, on that front or not
    final_hypervolume: float = 0.0
    final_baselines: dict[str, Point] = field(default_factory=dict)
    pruned: int = 0  # a search with rungs: trials stopped after a rung before the last
    silent_rungs: list[tuple[int, int, float]] = field(default_factory=list)  # rungs that told no plan apart (study.silent_rungs)
    scored: int = 0  # trials trained to the end with a quality, above the floor or not
    last_failure: str | None = None  # what made the last failed trial fail (StudyRecord.last_failure)
    failed_baselines: dict[str, str] = field(default_factory=dict)  # the job's baselines that failed: why, by name

    def failed_text(self) -> str:
        """``2 failed (1 timeout, 1 out of memory)``, and ``, 40 pruned`` in a search with rungs."""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.failures.items()))
        pruned = f", {self.pruned} pruned after a rung" if self.pruned else ""
        return f"{self.failed} failed" + (f" ({reasons})" if reasons and self.failed else "") + pruned


@dataclass
class TrialWork:
    """A trial of the study, running on a worker."""

    trial: optuna.trial.Trial
    plan: Plan
    params: int
    pct: float
    memory_gb: float
    run_id: str
    actor: object = None
    started: float = 0.0  # time.monotonic() when it went to its worker
    up: float | None = None  # time.monotonic() once its worker was seen started: the trial timeout counts from then
    attempts: int = 0  # re-runs after its worker was lost
    rung: int = 0  # in a search with rungs: the rung it trains up to
    node: str = ""  # where its worker runs, once known
    overrides: dict = field(default_factory=dict)  # request fields other than the job's: a rung's stop and checkpoint
    baseline = None

    @property
    def counts(self) -> bool:
        """Against the budget: a new trial does; a trial sent on to a later rung already did."""
        return self.rung == 0

    @property
    def trial_number(self) -> int:
        return self.trial.number

    @property
    def label(self) -> str:
        return f"trial {self.trial.number}" + (f" (rung {self.rung + 1})" if self.overrides else "")

    def adapter_dir(self, layout: RunLayout) -> Path:
        return layout.trial_adapter(self.trial.number)

    def failed(self, record: StudyRecord, error: str, reason: str | None) -> None:
        record.fail(self.trial, error, reason)

    def finished(self, record: StudyRecord, result: TrialResult) -> None:
        record.finish(self.trial, result.quality, self.params, result.metrics, result.train_seconds,
                      result.peak_memory_mb, result.device, result.node)

    def stopped(self, record: StudyRecord) -> None:
        if self.rung == 0:  # a later rung runs again from its checkpoint on resume
            record.interrupt(self.trial, STOPPED)


@dataclass
class BaselineWork:
    """A named baseline, running on a worker; kept beside the study's trials."""

    name: str
    plan: Plan
    params: int
    pct: float
    memory_gb: float
    run_id: str
    actor: object = None
    started: float = 0.0
    attempts: int = 0
    counts = False
    trial_number = None
    overrides = {}

    @property
    def baseline(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        return f"baseline {self.name}"

    def adapter_dir(self, layout: RunLayout) -> Path:
        return layout.baseline_adapter(self.name)

    def failed(self, record: StudyRecord, error: str, reason: str | None) -> None:
        record.record_baseline(self.name, {"error": error[-2000:], "reason": reason, "plan": self.plan.describe(),
                                           "memory_estimate_gb": self.memory_gb, "mlflow_run_id": lasting(self.run_id)})

    def finished(self, record: StudyRecord, result: TrialResult) -> None:
        record.record_baseline(self.name, {"quality": result.quality, "params": self.params, "pct": self.pct,
                                           "plan": self.plan.describe(), "metrics": result.metrics,
                                           "mlflow_run_id": lasting(self.run_id)})

    def stopped(self, record: StudyRecord) -> None:
        """A baseline that did not finish runs again on resume."""


@dataclass
class FinalWork:
    """A re-evaluation of a front point or baseline (``target``: ``trial:N`` or ``baseline:NAME``) with a new seed."""

    target: str
    seed: int
    plan: Plan
    params: int
    pct: float
    memory_gb: float
    run_id: str
    overrides: dict
    actor: object = None
    started: float = 0.0
    attempts: int = 0
    counts = False
    trial_number = None
    baseline = None

    @property
    def label(self) -> str:
        return f"re-evaluation of {self.target.replace(':', ' ')} (seed {self.seed})"

    def adapter_dir(self, layout: RunLayout) -> Path:
        return layout.final_adapter(self.target, self.seed)

    def failed(self, record: StudyRecord, error: str, reason: str | None) -> None:
        record.record_final(self.target, self.seed, {"error": error[-2000:], "reason": reason, "mlflow_run_id": lasting(self.run_id)})

    def finished(self, record: StudyRecord, result: TrialResult) -> None:
        record.record_final(self.target, self.seed, {"quality": result.quality, "test_quality": result.test_quality,
                                                     "metrics": result.metrics,
                                                     "train_seconds": result.train_seconds, "mlflow_run_id": lasting(self.run_id)})

    def stopped(self, record: StudyRecord) -> None:
        """A re-evaluation that did not finish runs again on resume."""


class SearchLoop:
    """Keeps every worker busy until the baselines have run and the budget of trials is spent."""

    def __init__(self, prepared: Prepared, record: StudyRecord, tracker: Tracker, pool: WorkerPool,
                 domain: Domain, lease: Lease, progress: bool = True):
        self.job, self.prepared, self.record, self.tracker, self.pool = prepared.job, prepared, record, tracker, pool
        self.lease = lease
        self.reference = Reference(quality=domain.reference[0], params=int(domain.reference[1]))
        self.running: dict = {}
        self.finished, self.failed = record.done()
        trained = record.baseline_points()  # a baseline that failed trains again
        self.baselines_left = [name for name in prepared.baselines if name not in trained]
        self.durations: list[float] = []  # seconds of every trial and baseline that finished
        trials = self.job.budget.trials
        self.proposer = Proposer(record.study, domain, self.job.seed, 50 * max(1, trials), on_skip=self._skipped,
                                 trained_as=record.trained_as, batched=record.batched)
        self.bar = _progress(trials + len(prepared.baselines), self.finished + len(prepared.baselines) - len(self.baselines_left),
                             progress)
        self.finals: list[tuple[str, int, Plan]] | None = None  # re-evaluations left, once the search is done
        fidelity = self.job.fidelity
        self.rungs = fidelity.rungs if fidelity.asha else None  # trials train in rungs (MO-ASHA)
        self.continuing = self._cut_short_rungs() if self.rungs else []  # (trial, rung) a stopped search left mid-rung
        self._counts: dict[int, int] = {}  # trainable parameters by trial number
        self._rung_table: list[RungTrial] | None = None
        self._runs: dict[int, str] = {}  # MLflow run (or its stand-in, until it exists) of each trial started here
        self._unrecorded: dict[str, optuna.trial.Trial] = {}  # trials whose MLflow run's id is not in the study yet
        self._ahead: Future | None = None  # the next trial's proposal, made while every worker is busy
        self._proposing: ThreadPoolExecutor | None = None
        self._proposal_seconds: list[float] = []
        self._charts_drawn = -CHARTS_EVERY  # when the PNG charts were last drawn (time.monotonic())
        self._charting: ThreadPoolExecutor | None = None
        self._charts: Future | None = None  # the PNG charts being drawn
        self._front_drawn = -FRONT_EVERY  # when the Pareto table and interactive chart were last written
        self._front_due = False  # a result came in since they were
        self._points: list[Point] | None = None  # the finished trials' points, kept as results come in
        self._running_noted: dict | None = None  # the baselines and re-evaluations last written as running

    def run(self) -> None:
        status = "FAILED"
        try:
            while (self.baselines_left or self._trials_to_start() or self.running or self._next_rung() is not None
                   or self._finals_left()):
                self.lease.renew()
                self._fill()
                ready = self.pool.wait(list(self.running), self._wait_time())
                self._note_nodes()
                self._draw_front()
                if not ready:
                    self._stop_overdue()
                for i, ref in enumerate(ready):  # every result in before the next proposals, which then share one fit
                    self._collect(ref, start_next=i == len(ready) - 1)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except LeaseLost as exc:  # the trials in flight and the parent run are the other driver's now: leave them to it
            self.running.clear()
            status = None
            raise UserError("run", str(exc), "the other driver goes on with the search") from None
        finally:
            self._stop(status)

    def _finals_left(self) -> bool:
        """Whether re-evaluations are left to start; their list is made once the search's trials are done."""
        if self.finals is None:
            if self.baselines_left or self._trials_to_start() or self.running or self._next_rung() is not None:
                return False
            self._prune_paused()
            self.finals = self._final_items()
            if self.finals:
                targets = {target for target, _, _ in self.finals}
                trials = counted(sum(t.startswith("trial:") for t in targets), "point")
                baselines = counted(sum(t.startswith("baseline:") for t in targets), "baseline")
                fronts = "front" if self.job.final.fronts == 1 else f"first {self.job.final.fronts} non-dominated fronts"
                log.warning("re-evaluating %s of the search's %s and %s: %d trainings with new seeds",
                            trials, fronts, baselines, len(self.finals))
                if hasattr(self.bar, "total"):
                    self.bar.total += len(self.finals)
                    self.bar.refresh()
        return bool(self.finals)

    def _final_items(self) -> list[tuple[str, int, Plan]]:
        """(target, seed, plan) of every re-evaluation the first ``final.fronts`` fronts and the baselines still lack."""
        if self.job.final.seeds == 0:
            return []
        targets = [(target, self.record.plan_of(which) if isinstance(which, int) else self.prepared.baselines.get(which))
                   for target, which in self.record.final_targets(self.job.final.fronts)]
        targets = [(target, plan) for target, plan in targets if plan is not None]
        final = self.record.final
        return [(target, seed, plan) for target, plan in targets for seed in range(1, self.job.final.seeds + 1)
                if seed not in self.record.final_seeds(target, final)]

    def _trials_to_start(self, finishing: TrialWork | BaselineWork | FinalWork | None = None) -> bool:
        """Whether the budget leaves a trial to start (``finishing``: a result in hand, not yet counted as finished)."""
        searching = sum(1 for work in self.running.values() if work.counts) + bool(finishing is not None and finishing.counts)
        return self.finished + searching < self.job.budget.trials

    def _record_run_ids(self) -> None:
        """Put the id of each trial's MLflow run in the study once the run exists (MLflow is written in the background)."""
        for stand_in, run_id in self.tracker.created():
            self._note_run(stand_in, run_id)

    def _resolve_run(self, work: TrialWork | BaselineWork | FinalWork) -> None:
        """Before a work item records its outcome: its run id (a stand-in while MLflow fails), in the study for a trial."""
        stand_in, work.run_id = work.run_id, self.tracker.settle(work.run_id)
        self._note_run(stand_in, work.run_id)

    def _note_run(self, stand_in: str, run_id: str) -> None:
        """Keep a trial's run id in the study; a stand-in (MLflow failing) is kept only in memory, where
        the tracker still resolves it when the run comes to exist."""
        trial = self._unrecorded.pop(stand_in, None)
        if trial is not None:
            self._runs[trial.number] = run_id
            if lasting(run_id) is not None:
                self.record.set_run_id(trial, run_id)

    def _run_of(self, trial: optuna.trial.FrozenTrial) -> str | None:
        return trial.user_attrs.get(MLFLOW_RUN) or self._runs.get(trial.number)

    def _fill(self) -> None:
        self._record_run_ids()
        space = self.prepared.space
        while self.pool.idle and self.baselines_left:
            name = self.baselines_left.pop(0)
            plan = self.prepared.baselines[name]
            params = space.count(plan)
            memory = self.prepared.memory(plan)
            run_id = self.tracker.start_trial(None, {"plan": plan.describe(), "trainable_params": params, **memory.to_dict()},
                                              baseline=name)
            self._submit(BaselineWork(name, plan, params, self.prepared.shape.pct(params), memory.total_gb, run_id))
        while self.pool.idle and (step := self._next_rung()) is not None:
            if self.continuing and step == self.continuing[0]:
                self.continuing.pop(0)
            self._send_on(*step)
        while self.pool.idle and self._trials_to_start():
            self._start_trial(self._propose())
        self._propose_ahead()
        while self.pool.idle and self.finals:
            target, seed, plan = self.finals.pop(0)
            params = space.count(plan)
            memory = self.prepared.memory(plan)
            run_id = self.tracker.start_trial(None, {"plan": plan.describe(), "trainable_params": params, "seed": seed},
                                              final=(target, seed))
            overrides = {"seed": self.job.seed + seed, "fidelity": self.job.final_fidelity,
                         "score_test": bool(self.prepared.data.test_texts)}
            self._submit(FinalWork(target, seed, plan, params, self.prepared.shape.pct(params), memory.total_gb, run_id,
                                   overrides))

    def _start_trial(self, proposal) -> None:
        space = self.prepared.space
        trial = proposal.trial
        plan = space.decode(trial.params)
        params = int(proposal.cost)  # the exact count of the plan, computed by the domain
        pct = self.prepared.shape.pct(params)
        memory = self.prepared.memory(plan)
        bracket = {}  # a search with rungs: the rung from which the trial is ranked
        if self.rungs:
            fidelity = self.job.fidelity
            bracket = {"bracket": bracket_of(trial.number, fidelity.brackets, len(self.rungs), fidelity.reduction_factor)}
        self.record.describe_trial(trial, plan, pct, memory.total_gb, **bracket)
        run_id = self.tracker.start_trial(trial.number, {**space.values(trial.params), "plan": plan.describe(),
                                                         "trainable_params": params, **memory.to_dict(), **bracket})
        self._runs[trial.number], self._unrecorded[run_id] = run_id, trial
        first_rung = {"stop_at": self.rungs[0]} if self.rungs else {}
        self._submit(TrialWork(trial, plan, params, pct, memory.total_gb, run_id, overrides=first_rung))

    def _start_next(self, done: TrialWork | BaselineWork | FinalWork) -> None:
        """The worker that ``done`` freed starts the next trial as soon as ``done``'s result is in the
        study, before its adapter, MLflow run and front are written, which are then off the time a
        worker waits. Of results that came in together, this runs for the last one only, once all of
        them are in the study; ``_fill`` then starts the other freed workers, and those proposals share
        one fit of the sampler's model. Where proposals are made ahead, only one that is ready (without error) is
        started here. Only in a search without rungs and once the baselines are out (they and
        promotions go first, from ``_fill``), and while trials are left to start."""
        if (not self.pool.idle or self.rungs or self.baselines_left or not self._trials_to_start(done)
                or (self._ahead is not None and not (self._ahead.done() and self._ahead.exception() is None))):
            return
        self._start_trial(self._propose())

    def _propose(self):
        """The next trial's proposal: the one made ahead, else a new one."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            return ahead.result()
        return self._timed_proposal()

    def _timed_proposal(self):
        started = time.perf_counter()
        proposal = self.proposer.next()
        self._proposal_seconds.append(time.perf_counter() - started)
        return proposal

    def _propose_ahead(self) -> None:
        """While every worker is busy, propose the next trial in the background, so that a worker
        that frees up starts at once. Only with several workers, and where proposing is slow next to
        training (more than ``AHEAD_SHARE`` of a trial's time): a proposal made ahead misses the
        result that frees its worker, which a search of long trials, or a sequential one, need not give up."""
        if (self.job.budget.parallel < 2 or self._ahead is not None or self.pool.idle or not self._trials_to_start()
                or not self.durations or not self._proposal_seconds):
            return
        if statistics.median(self._proposal_seconds[-20:]) <= AHEAD_SHARE * statistics.median(self.durations[-20:]):
            return
        if self._proposing is None:
            self._proposing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autopeft-propose")
        self._ahead = self._proposing.submit(self._timed_proposal)

    def _settle_ahead(self) -> None:
        """A stopping search waits for a proposal in progress, so that its trial is recorded as interrupted."""
        if self._ahead is not None:
            wait([self._ahead])
        if self._proposing is not None:
            self._proposing.shutdown(wait=True)

    # -- rungs (fidelity.schedule: asha) -----------------------------------------------------------

    def _rung_trials(self) -> list[RungTrial]:
        """Every trial that finished a rung, read once per change (a result, a trial sent on)."""
        if self._rung_table is None:
            self._rung_table = self._read_rung_trials()
        return self._rung_table

    def _read_rung_trials(self) -> list[RungTrial]:
        return [RungTrial(trial=t.number, params=self._count(t),
                          qualities=tuple(t.user_attrs[RUNG_QUALITY]), sent_to=t.user_attrs.get(RUNG, 0),
                          losses=tuple(t.user_attrs.get(RUNG_LOSS, ())), bracket=t.user_attrs.get(BRACKET, 0),
                          paused=t.state == States.RUNNING and after_rung(t.user_attrs) and t.number not in self._in_flight())
                for t in self.record.rung_trials()]

    def _count(self, trial: optuna.trial.FrozenTrial) -> int:
        if trial.number not in self._counts:
            self._counts[trial.number] = self.prepared.space.count(Plan.from_dict(trial.user_attrs[PLAN]))
        return self._counts[trial.number]

    def _in_flight(self) -> set[int]:
        return {work.trial_number for work in self.running.values() if isinstance(work, TrialWork)}

    def _next_rung(self) -> tuple[int, int] | None:
        """(trial, rung) to train next: a rung a stopped search cut short, else the next promotion."""
        if not self.rungs:
            return None
        if self.continuing:
            return self.continuing[0]
        return next_promotion(self._rung_trials(), len(self.rungs), self.job.fidelity.reduction_factor,
                              self.reference.quality)

    def _cut_short_rungs(self) -> list[tuple[int, int]]:
        """Trials sent to a later rung that a stopped search left unfinished: that rung runs again from its checkpoint."""
        return [(t.number, t.user_attrs[RUNG]) for t in self.record.rung_trials()
                if t.state == States.RUNNING and not after_rung(t.user_attrs)]

    def _send_on(self, number: int, rung: int) -> None:
        """Continue a paused trial from its checkpoint up to ``rung``."""
        self._rung_table = None
        frozen = self.record.study.get_trials(deepcopy=False)[number]
        trial = optuna.trial.Trial(self.record.study, frozen._trial_id)
        plan = self.record.plan_of(number)
        params = self.prepared.space.count(plan)
        checkpoint = self.job.layout.checkpoint(number, rung - 1).read_bytes()
        self.record.send_to_rung(trial, rung)
        self._submit(TrialWork(trial, plan, params, self.prepared.shape.pct(params), self.prepared.memory_gb(plan),
                               self._run_of(frozen), rung=rung,
                               overrides={"stop_at": self.rungs[rung], "resume": checkpoint}))

    def _pause(self, work: TrialWork, result: TrialResult) -> None:
        """A trial finished a rung before the last: keep its checkpoint; it waits to be sent on or pruned."""
        path = self.job.layout.checkpoint(work.trial.number, work.rung)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(result.checkpoint)
        partial.replace(path)
        self.record.record_rung(work.trial, result.quality, result.metrics.get("eval_loss"), result.train_seconds)
        self.job.layout.checkpoint(work.trial.number, work.rung - 1).unlink(missing_ok=True)
        self.tracker.log_rung(work.run_id, work.rung, result.quality, work.trial.user_attrs.get(TRAIN_SECONDS, 0.0))

    def _prune_paused(self) -> None:
        """The search is over: trials still waiting at a rung stop there, with that rung's quality."""
        self._rung_table = None
        for t in self.record.rung_trials():
            if t.state != States.RUNNING:
                continue
            rung = len(t.user_attrs[RUNG_QUALITY]) - 1
            self.record.prune(optuna.trial.Trial(self.record.study, t._trial_id))
            self.job.layout.checkpoint(t.number, rung).unlink(missing_ok=True)
            if self._run_of(t):
                self.tracker.prune_trial(self._run_of(t), f"after rung {rung + 1} of {len(self.rungs)}")

    def _skipped(self, trial: optuna.trial.Trial, reason: str) -> float:
        """A proposal that is never trained: recorded with its plan; told at its exact count."""
        plan = self.prepared.space.decode(trial.params)
        params = self.prepared.space.count(plan)
        self.record.describe_trial(trial, plan, self.prepared.shape.pct(params), self.prepared.memory_gb(plan))
        self.record.mark_skipped(trial, reason)
        return float(params)

    def _submit(self, work: TrialWork | BaselineWork | FinalWork) -> None:
        request = trial_request(self.prepared, work.plan, trial_number=work.trial_number, baseline=work.baseline,
                                **work.overrides)
        work.actor, ref = self.pool.submit(request)
        work.started, work.since, work.node, work.up = time.monotonic(), time.time(), "", None
        self.running[ref] = work
        self._note_nodes()

    def _note_nodes(self) -> None:
        """Note when each running trial's worker is up, and record where it runs (for whoever watches the search).

        A trial's timeout counts from then: a worker still starting (its process, its imports) or
        waiting for a node to join the cluster does not eat into it.
        """
        for work in self.running.values():
            if not work.node:
                work.node = self.pool.node(work.actor)
                if work.node:
                    work.up = time.monotonic()
                    if isinstance(work, TrialWork):
                        work.trial.set_user_attr(NODE, work.node)
        self._note_running_work()

    def _note_running_work(self) -> None:
        """Write the baselines and re-evaluations training now to the study when they change (trials are its own)."""
        noted = {work.label: {"since": work.since, "node": work.node, "plan": work.plan.describe()}
                 for work in self.running.values() if not isinstance(work, TrialWork)}
        if noted != self._running_noted:
            self.record.note_running_work(noted)
            self._running_noted = noted

    def trial_timeout(self) -> float | None:
        """Seconds a trial may run: the job's, else ten times the slowest finished one (at least 15 minutes)."""
        if self.job.budget.trial_timeout is not None:
            return self.job.budget.trial_timeout
        return max(AUTO_TIMEOUT_FLOOR, 10 * max(self.durations)) if self.durations else None

    def _wait_time(self) -> float:
        """Until the next trial is due to time out, the lease to be renewed, or the front to be drawn."""
        cap = FRONT_EVERY if self._front_due else HEARTBEAT
        timeout = self.trial_timeout()
        if timeout is None or not self.running:
            return cap
        now = time.monotonic()
        if any(work.up is None for work in self.running.values()):
            cap = min(cap, STARTING_POLL)
        return max(0.05, min([cap, *(work.up + timeout - now for work in self.running.values() if work.up is not None)]))

    def _stop_overdue(self) -> None:
        timeout = self.trial_timeout()
        if timeout is None:
            return
        now = time.monotonic()
        for ref, work in list(self.running.items()):
            if work.up is not None and now - work.up >= timeout:
                del self.running[ref]
                self.pool.stop(work.actor)
                self._fail(work, f"the trial ran longer than the trial timeout of {timeout:.0f} s; its worker was stopped",
                           TIMEOUT)

    def _collect(self, ref, start_next: bool = True) -> None:
        """Record the result of ``ref``; with ``start_next``, its worker starts the next trial at once."""
        work = self.running.pop(ref)
        self._rung_table = None
        self._resolve_run(work)
        try:
            result: TrialResult = self.pool.ray.get(ref)
        except Exception as exc:  # the trial raised or its worker died: retry a lost worker, else record it; go on
            died = self.pool.died(exc)
            self.pool.release(work.actor, healthy=not died)
            error = _error_text(exc)
            outcome = next((e for e in (getattr(exc, "cause", None), exc) if isinstance(e, TrialOutcomeError)), None)
            if outcome is not None:
                reason = getattr(outcome, "reason", "invalid result")
            elif out_of_memory(error):
                reason = OUT_OF_MEMORY
            elif died:
                if work.attempts < self.job.budget.max_retries:
                    work.attempts += 1
                    log.warning("%s lost its worker; running it again (attempt %d of %d)", work.label, work.attempts + 1,
                                self.job.budget.max_retries + 1)
                    self.tracker.note_retry(work.run_id, work.attempts, error)
                    self._submit(work)
                    return
                reason = WORKER_LOST
            else:
                reason = None
            self._fail(work, error, reason)
            return
        self.pool.release(work.actor, healthy=True)
        self.durations.append(time.monotonic() - work.started)
        if isinstance(work, TrialWork) and result.checkpoint is not None:
            self._pause(work, result)
            if work.counts:
                self.finished += 1
                self.bar.update(1)
            return
        if isinstance(work, TrialWork) and work.rung:
            self.job.layout.checkpoint(work.trial.number, work.rung - 1).unlink(missing_ok=True)
        work.finished(self.record, result)
        try:
            if start_next:
                self._start_next(work)
        finally:
            self._log_result(work, result)

    def _log_result(self, work: TrialWork | BaselineWork | FinalWork, result: TrialResult) -> None:
        """What a finished work item leaves besides its record in the study: its adapter, its MLflow run, the front."""
        adapter_dir = _save_adapter(work.adapter_dir(self.job.layout), result)
        self.tracker.finish_trial(work.run_id, {**result.metrics, "quality": result.quality, "trainable_params": work.params,
                                                "trainable_pct": work.pct, "train_seconds": result.train_seconds,
                                                "peak_memory_mb": result.peak_memory_mb}, adapter_dir,
                                     {"autopeft.node": result.node, "autopeft.device": result.device})
        if self._points is not None and isinstance(work, TrialWork):
            self._points.append(Point(trial=work.trial.number, quality=result.quality, params=work.params, pct=work.pct,
                                      plan=work.plan.describe()))
        if work.counts:
            self.finished += 1
        if not isinstance(work, FinalWork):  # a re-evaluation leaves the search's front as it was
            self._log_front()
        if work.counts or not isinstance(work, TrialWork):  # a trial's later rung was counted at its first
            self.bar.update(1)

    def _fail(self, work: TrialWork | BaselineWork | FinalWork, error: str, reason: str | None) -> None:
        self._rung_table = None
        self._resolve_run(work)
        self.tracker.fail_trial(work.run_id, error, reason)
        log.warning("%s failed%s: %s", work.label, f" ({reason})" if reason else "", error.strip().splitlines()[-1])
        if reason == OUT_OF_MEMORY:
            self.proposer.domain.memory_limit.ran_out(work.memory_gb)
            log.warning("%s ran out of memory at an estimated %.2f GiB: plans estimated at that much or more "
                        "are no longer proposed", work.label, work.memory_gb)
        work.failed(self.record, error, reason)
        if isinstance(work, TrialWork):
            self.failed += 1
        if work.counts:
            self.finished += 1
            self.bar.update(1)
        elif not isinstance(work, TrialWork):
            self.bar.update(1)

    def _finished_points(self) -> list[Point]:
        if self._points is None:
            self._points = self.record.finished_points()
        return self._points

    def _log_front(self) -> None:
        """The parent run's hypervolume after every result; its Pareto table and interactive chart at most
        every ``FRONT_EVERY`` seconds, the PNGs (slower drawings) every ``CHARTS_EVERY``, and all when
        the search stops."""
        points = self._finished_points()
        front = pareto_front(points, self.reference.quality)
        volume = hypervolume(points, self.reference)
        self.tracker.log_front(front, volume, self.finished, None)
        self._front_due = True
        self._draw_front()
        if points and time.monotonic() - self._charts_drawn >= CHARTS_EVERY:
            self._log_charts(points)
        best = max([p.quality for p in points] or [float("nan")])
        self.bar.set_postfix(best=f"{best:.4f}", pareto=len(front), hv=f"{volume:.4f}")

    def _draw_front(self, now: bool = False) -> None:
        """The Pareto table and interactive chart, where a result came in since they were written and
        ``FRONT_EVERY`` seconds have passed (``now``: at once)."""
        from autopeft.dashboards.pareto_chart import pareto_html, pareto_svg

        if not self._front_due or (not now and time.monotonic() - self._front_drawn < FRONT_EVERY):
            return
        self._front_drawn, self._front_due = time.monotonic(), False
        points = self._finished_points()
        front = pareto_front(points, self.reference.quality)
        marks = self.record.baseline_points()
        title = f"{self.job.name}: {len(points)} trials"
        page = pareto_html(pareto_svg(points, front, self.reference, title, self.job.task.metric, marks), title)
        self.tracker.log_front(front, hypervolume(points, self.reference), None, page,
                               {name: p.to_dict() for name, p in marks.items()})

    def _log_charts(self, points: list[Point], wait: bool = False) -> None:
        """The PNG charts: the front, the hypervolume trace, where the front trains, the dimensions of
        every trial. What they show is read here; they are drawn (a second or so) in a thread of
        their own, so that no worker waits on a drawing, one drawing at a time (``wait``: at once, and
        wait for it)."""
        from autopeft.dashboards.dimensions_chart import trial_dimensions

        if self._charts is not None and not self._charts.done() and not wait:
            return
        self._charts_drawn = time.monotonic()
        front = pareto_front(points, self.reference.quality)
        what = (list(points), front, self.record.baseline_points(), [self.record.plan_of(p.trial) for p in front],
                trial_dimensions(self.record.completed()))
        if self._charting is None:
            self._charting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="autopeft-charts")
        self._charts = self._charting.submit(self._draw_charts, *what)
        self._charts.add_done_callback(_warn_if_failed)
        if wait:
            self._charts.result()

    def _draw_charts(self, points: list[Point], front: list[Point], baselines: dict[str, Point], plans: list[Plan],
                     dimensions: tuple) -> None:
        from autopeft.dashboards.dimensions_chart import dimensions_png
        from autopeft.dashboards.hypervolume_chart import hypervolume_png
        from autopeft.dashboards.pareto_chart import pareto_png
        from autopeft.dashboards.placement_chart import placement_png

        name, metric = self.job.name, self.job.task.metric
        self.tracker.log_chart("pareto.png", pareto_png(points, front, self.reference, f"{name}: {len(points)} trials",
                                                        metric, baselines))
        self.tracker.log_chart("hypervolume.png", hypervolume_png(points, self.reference, name))
        self.tracker.log_chart("placement.png", placement_png(plans, self.prepared.shape, name))
        self.tracker.log_chart("dimensions.png", dimensions_png(*dimensions, name, metric))

    def _stop(self, status: str | None) -> None:
        from autopeft.record.snapshot import report_page

        self.bar.close()
        try:
            self._settle_ahead()
            self.tracker.flush()
            self._record_run_ids()
            for work in self.running.values():
                self.tracker.kill_trial(work.run_id, STOPPED)
                work.stopped(self.record)
            if status is not None:  # (None: another driver has the search now, and its trials and list)
                if self._running_noted:
                    self.record.note_running_work({})
                for run_id in self.record.interrupt_orphans():  # stopped between being proposed and being sent to a worker
                    self.tracker.kill_trial(run_id, STOPPED)
            points = self.record.finished_points()
        except StoreUnavailable:  # trials left running are marked interrupted when the search resumes
            points = []
        if status is None:
            self._settle_charts()
            return
        if points:
            self._draw_front(now=True)
            self._log_charts(points, wait=True)
        if status == "FINISHED" and self.job.final.seeds:
            self._log_final_front()
        if points:
            self.tracker.log_chart("report.html", report_page(self.record, stopping=True).encode())
        self.tracker.finish_search(status, {"FINISHED": "finished", "KILLED": "stopped"}.get(status, "failed"))
        self._settle_charts()

    def _settle_charts(self) -> None:
        if self._charting is not None:
            self._charting.shutdown(wait=True)

    def _log_final_front(self) -> None:
        trials, baselines = self.record.final_points()
        runs = {self.record.trial_info(p.trial)["mlflow_run_id"]: p for p in trials}
        recorded = self.record.baselines
        runs.update({recorded[name].get("mlflow_run_id"): p for name, p in baselines.items()})
        self.tracker.log_final_front(pareto_front(trials, self.reference.quality), hypervolume(trials, self.reference), baselines,
                                     {run_id: p for run_id, p in runs.items() if run_id}, trials)


def run_search(job: JobSpec, progress: bool = True, prepared: Prepared | None = None) -> SearchSummary:
    """Run (or resume) the search the job describes and return its Pareto front."""
    prepared = prepared or prepare(job)
    job.layout.root.mkdir(parents=True, exist_ok=True)
    record = StudyRecord.open(job.name, job.optuna_storage)
    check_resume(record, job, prepared)
    lease = Lease(record.study, job.name)
    lease.acquire()
    try:
        return _run_search(job, progress, prepared, record, lease)
    finally:
        try:
            lease.release()
        except StoreUnavailable:
            pass  # the storage is down: the lease is taken over once its heartbeat is stale


def _run_search(job: JobSpec, progress: bool, prepared: Prepared, record: StudyRecord, lease: Lease) -> SearchSummary:
    ray = init_ray(job)
    pool = WorkerPool(ray, job, ray.put(prepared.data))
    resuming = record.started
    reference = record.reference if resuming else prepared.reference
    if prepared.zero_shot_floor and not resuming:
        reference = Reference(quality=zero_shot_score(prepared, pool, progress), params=reference.params)
    memory_limit = MemoryLimit(job.budget.max_memory_gb)
    for estimate in record.out_of_memory_estimates():
        memory_limit.ran_out(estimate)
    domain = space_domain(prepared.space, prepared.max_params, reference, prepared.memory_gb, memory_limit,
                          rungs=job.fidelity.rungs if job.fidelity.asha else (), baselines=prepared.baseline_points())
    record.study.sampler = make_sampler(job.optimizer.sampler, job.seed, job.optimizer.n_startup_trials, domain)
    orphans = record.interrupt_orphans() if resuming else []
    if resuming:
        record.resubmitted(job.public_dict())
        requeued = record.requeue_interrupted()
        if requeued:
            log.warning("trial %s was interrupted: its plan runs again first" if len(requeued) == 1 else
                        "trials %s were interrupted: their plans run again first", ", ".join(map(str, requeued)))
    else:
        record.start(job.public_dict(), reference, prepared.data.label_names, prepared.space.summary())
        for params in domain.not_baselines(prepared.warm_start):  # a named baseline trains the others' plans already
            record.study.enqueue_trial(params, skip_if_exists=True)
    embedded = job.stores.mlflow_uri is None  # a tracking server keeps artifacts in its own store
    tracker = Tracker(job.mlflow_uri, job.name, artifact_root=job.layout.artifacts if embedded else None)
    record.parent_run_id = tracker.start_search(
        job.name,
        params={**flatten(job.public_dict()), "reference.quality": reference.quality,
                "reference.params": reference.params, "space.dimensions": len(prepared.space.dimensions),
                "model.base_params": prepared.shape.base_params},
        artifacts={"job.yaml": yaml.safe_dump(job.public_dict(), sort_keys=False),
                   "search_space.yaml": yaml.safe_dump(prepared.space.spec.model_dump(mode="json"), sort_keys=False),
                   "reference.json": json.dumps({"quality": reference.quality, "params": reference.params})},
        resume_id=record.parent_run_id,
        tags={"autopeft.sampler": job.optimizer.sampler,
              "autopeft.reference": f"{job.task.metric} {reference.quality:.4f}, {reference.params:,} trainable parameters"},
    )
    for run_id in orphans:
        tracker.kill_trial(run_id, "the search stopped before this trial finished")
    loop = SearchLoop(prepared, record, tracker, pool, domain, lease, progress)
    loop.run()
    points = record.finished_points()
    final, final_baselines = record.final_points()
    return SearchSummary(run_dir=job.run_dir, parent_run_id=record.parent_run_id, finished=loop.finished,
                         failed=loop.failed, reference=reference, front=pareto_front(points, reference.quality), scored=len(points),
                         hypervolume=hypervolume(points, reference), baselines=record.baseline_points(),
                         failures=record.failures(), last_failure=record.last_failure(),
                         failed_baselines=record.failed_baselines(prepared.baselines),
                         final_front=pareto_front(final, reference.quality), final_points=final,
                         final_hypervolume=hypervolume(final, reference), final_baselines=final_baselines,
                         pruned=len(record.study.get_trials(deepcopy=False, states=(States.PRUNED,))),
                         silent_rungs=record.rungs_told_nothing(job.fidelity.reduction_factor) if job.fidelity.asha else [])


def zero_shot_score(prepared: Prepared, pool: WorkerPool, progress: bool) -> float:
    """The base model's own score on the evaluation set: the quality floor of a generation task."""
    job = prepared.job
    if progress:
        print(f"autopeft: scoring {job.model} zero-shot on {prepared.data.num_scored(job.fidelity)} "
              "examples (the reference point's quality)", file=sys.stderr, flush=True)
    return pool.run_one(trial_request(prepared, Plan(), trial_number=None, save_adapter=False, zero_shot=True)).quality


def trial_request(prepared: Prepared, plan: Plan, **fields) -> TrialRequest:
    """What a worker needs to train and score ``plan`` under the job: its model, task, fidelity and trainer."""
    job = prepared.job
    defaults = dict(model=job.model, num_labels=prepared.data.num_labels, metric=job.task.metric, fidelity=job.fidelity,
                    seed=job.seed, trainer=job.trainer)
    return TrialRequest(plan=plan, **{**defaults, **fields})


def _save_adapter(target: Path, result: TrialResult) -> Path | None:
    if not result.adapter_files:
        return None
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name, content in result.adapter_files.items():
        (target / name).write_bytes(content)
    return target


AUTO_TIMEOUT_FLOOR = 15 * 60.0
AHEAD_SHARE = 0.02  # proposals made ahead once a proposal takes more than this share of a trial's time
CHARTS_EVERY = 30.0  # seconds between redrawings of the PNG charts while a search runs
STARTING_POLL = 1.0  # seconds between looks at a worker still starting, for when its trial's timeout begins
FRONT_EVERY = 2.0  # seconds between rewritings of the Pareto table and interactive chart while a search runs
_MEMORY_ERRORS = ("OutOfMemoryError", "MemoryError", "CUDA out of memory", "can't allocate memory", "memory pressure")


def out_of_memory(error: str) -> bool:
    """Whether a trial's error (its traceback) is the device or the host running out of memory."""
    return any(sign in error for sign in _MEMORY_ERRORS)


def _warn_if_failed(drawing: Future) -> None:
    if drawing.exception() is not None:
        log.warning("the charts could not be drawn: %s", drawing.exception())


def _error_text(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    return "".join(traceback.format_exception(cause if cause is not None else exc))


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="trials", unit="trial", dynamic_ncols=True)
