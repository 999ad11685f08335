"""The Optuna study of a search, and every key autopeft stores on it: the one reader and writer.

The study is the source of truth for resume. Objectives: quality (maximised) and the exact
trainable-parameter count (minimised). Named baselines are kept beside the trials, on the study.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import optuna

from autopeft.errors import UserError
from autopeft.record.pareto import Point, Reference, nondominated_fronts

if TYPE_CHECKING:
    from autopeft.workers.plan import Plan

DIRECTIONS = ["maximize", "minimize"]
States = optuna.trial.TrialState

# on the study
REFERENCE, JOB, NUM_LABELS, LABEL_NAMES, PARENT_RUN, BASELINES = (
    "reference", "job", "num_labels", "label_names", "mlflow_parent_run_id", "baselines")
SPACE = "space"  # the searched dimensions and fixed settings the search started with
LEASE = "driver"  # the running driver's lease (record/lease.py)
# on each trial
PLAN, PLAN_SUMMARY, TRAINABLE_PCT, MLFLOW_RUN = "plan", "plan_summary", "trainable_pct", "mlflow_run_id"
MEMORY_ESTIMATE = "memory_estimate_gb"
SKIPPED, INTERRUPTED, ERROR, FAILURE = "skipped", "interrupted", "error", "failure"
FINAL = "final"  # on the study: the re-evaluations of front points and baselines, by target and seed
REQUEUED = "requeued"  # on the study: interrupted trials whose plans were queued to run again
RUNNING_WORK = "running_work"  # on the study: the baselines and re-evaluations training now, for whoever watches
OUT_OF_MEMORY = "out of memory"  # a FAILURE: the trial's device or host ran out of memory
TIMEOUT = "timeout"  # a FAILURE: the trial ran longer than the trial timeout and its worker was stopped
WORKER_LOST = "worker lost"  # a FAILURE: the trial's worker process died on every attempt
METRICS, TRAIN_SECONDS, PEAK_MEMORY_MB, DEVICE, NODE = "metrics", "train_seconds", "peak_memory_mb", "device", "node"
RUNG_QUALITY, RUNG = "rung_quality", "rung"  # a search with rungs: the quality after each rung, the rung last sent to
BRACKET = "bracket"  # and the rung from which the trial is ranked (its bracket; 0 where the search has one bracket)
RUNG_LOSS = "rung_eval_loss"  # and the validation loss after each rung (None where the trainer reports none)
RUNG_SECONDS, RUNG_FINISHED = "rung_train_seconds", "rung_finished_at"  # each rung's seconds, and when it ended (Unix time)


def tells_plans_apart(qualities) -> bool:
    """Whether the qualities at a rung differ at all. Early in training every plan may score the
    majority label's rate, which says nothing about the plans."""
    return len(set(qualities)) > 1


def silent_rungs(qualities: list[list[float]], least: int) -> list[tuple[int, int, float]]:
    """(rung, trials, their one quality) for each rung at which at least ``least`` trials scored and all scored the same.

    ``qualities`` holds each trial's quality after each rung before the last. Such a rung told no
    plan apart: the optimizer leaves it out, and promotions from it go by the validation loss alone.
    """
    silent = []
    for rung in range(max(map(len, qualities), default=0)):
        scores = [q[rung] for q in qualities if len(q) > rung and q[rung] is not None and math.isfinite(q[rung])]
        if len(scores) >= least and not tells_plans_apart(scores):
            silent.append((rung, len(scores), scores[0]))
    return silent


def after_rung(attrs: dict) -> bool:
    """Whether a trial (while RUNNING) waits after a rung: it finished the rung it was last sent to,
    and is neither sent on nor pruned yet."""
    return len(attrs.get(RUNG_QUALITY, [])) > attrs.get(RUNG, 0)


def ranked_at(rung: int, bracket: int) -> bool:
    """Whether a trial of ``bracket`` is ranked at ``rung``: a trial of bracket b goes on past the
    first b rungs unranked."""
    return rung >= bracket


def ranked_where_it_waits(attrs: dict) -> bool:
    """Whether a trial's last finished rung is one at which it is ranked (``ranked_at``)."""
    return ranked_at(len(attrs.get(RUNG_QUALITY, [])) - 1, attrs.get(BRACKET, 0))


def failure_reason(attrs: dict) -> str:
    """A failed trial's reason in one line: autopeft's (``out of memory``, ``timeout``...), else its error's last line."""
    if FAILURE in attrs:
        return attrs[FAILURE]
    lines = [line for line in str(attrs.get(ERROR, "")).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "error"


def _std(values: list[float]) -> float | None:
    """The sample standard deviation; None for one value, which has none (a table shows its mean alone)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyRecord:
    """A search's study with typed access to what autopeft stores on it."""

    def __init__(self, study: optuna.Study, storage=None, reader=None):
        self.study = study
        self._storage = storage  # autopeft's own storage, where the study was opened with it
        self._reader = reader  # the database store ``load`` or ``at`` opened, whose connections ``close`` closes

    def close(self) -> None:
        """Close the connections of a record loaded to be read. A process that reads a search again and again
        (a script following it through the API) would otherwise keep one per read until the garbage collector
        ran, and a database server refuses clients past its limit (PostgreSQL's is 100)."""
        if self._reader is not None:
            self._reader.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def _read(cls, name: str, storage: str | optuna.storages.RDBStorage) -> StudyRecord:
        """The study ``name`` in the database at ``storage`` (its URL, or a store opened for this record), to be
        read; a ``KeyError`` when it holds none."""
        backend = storage if isinstance(storage, optuna.storages.RDBStorage) else optuna.storages.RDBStorage(storage)
        try:
            return cls(optuna.load_study(study_name=name, storage=backend), reader=backend)
        except BaseException:
            backend.engine.dispose()
            raise

    def batched(self):
        """A block whose trial writes reach the store in one transaction."""
        return self._storage.batched() if self._storage is not None else contextlib.nullcontext()

    @classmethod
    def open(cls, name: str, storage: str) -> StudyRecord:
        """Create the study, or reopen it to resume."""
        _quiet()
        from autopeft.record.storage import open_storage

        store = open_storage(storage)
        return cls(optuna.create_study(study_name=name, storage=store, directions=DIRECTIONS, load_if_exists=True), store)

    @classmethod
    def load(cls, job) -> StudyRecord:
        """The study of a search that has run; a ``UserError`` when there is none."""
        _quiet()
        if job.stores.optuna_storage is None and not job.layout.study_db.is_file():
            raise UserError("run", f"no search has run for job '{job.name}' (no {job.layout.study_db})", "run 'autopeft submit' first")
        try:
            return cls._read(job.name, job.optuna_storage)
        except KeyError:
            raise UserError("run", f"the study store has no search named '{job.name}'", "run 'autopeft submit' first") from None

    @classmethod
    def at(cls, source: Path, field: str) -> StudyRecord:
        """The study of a search from its job file, its run directory or its study database;
        a ``UserError`` on ``field`` when ``source`` is none of them."""
        _quiet()
        if source.suffix in (".yaml", ".yml"):
            from autopeft.job.load import load_job

            return cls.load(load_job(source))
        from autopeft.record.layout import RunLayout

        db = RunLayout(source).study_db if source.is_dir() else source
        if not db.is_file():
            raise UserError(field, f"'{source}' is neither a job file, a run directory nor a study database",
                            "give the job file or the run directory of a search that has run")
        backend = None
        try:
            backend = optuna.storages.RDBStorage(f"sqlite:///{db}")
            names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
            name = names[0] if len(names) == 1 else source.name if source.name in names else None
            if name is None:
                raise UserError(field, f"'{db}' holds {len(names)} searches ({', '.join(names) or 'none'})",
                                "give the job file of the one you mean")
        except BaseException as exc:  # every refusal closes the store; past here ``_read`` owns it
            if backend is not None:
                backend.engine.dispose()
            if isinstance(exc, UserError) or not isinstance(exc, Exception):
                raise
            raise UserError(field, f"cannot read the study database '{db}': {str(exc).splitlines()[0]}",
                            "give the run directory of a search that has run") from None
        return cls._read(name, backend)

    # -- the search --------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return REFERENCE in self.study.user_attrs

    def start(self, job_data: dict, reference: Reference, label_names: tuple[str, ...], space: dict) -> None:
        """Store what a resumed search and an export need: the job, the labels, the space and, last (it
        marks the search as started), the reference point."""
        self.study.set_user_attr(JOB, job_data)
        self.study.set_user_attr(NUM_LABELS, len(label_names))
        self.study.set_user_attr(LABEL_NAMES, list(label_names))
        self.study.set_user_attr(SPACE, space)
        self.study.set_user_attr(REFERENCE, {"quality": reference.quality, "params": reference.params})

    @property
    def reference(self) -> Reference:
        ref = self.study.user_attrs[REFERENCE]
        return Reference(quality=ref["quality"], params=ref["params"])

    @property
    def job(self) -> dict:
        """The job as last submitted, as stored: what a resume may change (the trial count, the baselines, the
        re-evaluation, ...) as it was changed, the rest as the search was started."""
        return self.study.user_attrs.get(JOB, {})

    def resubmitted(self, job_data: dict) -> None:
        """A resumed search's job, once ``check_resume`` has found it the same search."""
        self.study.set_user_attr(JOB, job_data)

    @property
    def label_names(self) -> list[str] | None:
        return self.study.user_attrs.get(LABEL_NAMES)

    @property
    def space(self) -> dict | None:
        """The space the search started with (see ``start``); none for a search started before it was kept."""
        return self.study.user_attrs.get(SPACE)

    @property
    def num_labels(self) -> int:
        return int(self.study.user_attrs[NUM_LABELS])

    @property
    def parent_run_id(self) -> str | None:
        return self.study.user_attrs.get(PARENT_RUN)

    @parent_run_id.setter
    def parent_run_id(self, run_id: str) -> None:
        self.study.set_user_attr(PARENT_RUN, run_id)

    # -- baselines ---------------------------------------------------------------------------------

    @property
    def baselines(self) -> dict[str, dict]:
        """Every baseline that has run, finished or failed, by name."""
        return dict(self.study.user_attrs.get(BASELINES, {}))

    def record_baseline(self, name: str, record: dict) -> None:
        self.study.set_user_attr(BASELINES, {**self.baselines, name: record})

    def failed_baselines(self, named: Iterable[str]) -> dict[str, str]:
        """The named baselines whose last training failed, by name: what made it fail, in one line. Baselines of an
        earlier version of the job that it no longer names are left out."""
        named = set(named)
        return {name: r.get("reason") or failure_reason(r) for name, r in self.baselines.items()
                if name in named and "quality" not in r}

    def baseline_points(self) -> dict[str, Point]:
        """Finished baselines as points (failed ones left out), keyed by name."""
        return {name: Point(trial=-1, quality=r["quality"], params=int(r["params"]), pct=r["pct"], plan=r["plan"])
                for name, r in self.baselines.items() if "quality" in r}

    @property
    def running_work(self) -> dict[str, dict]:
        """The baselines and re-evaluations the driver noted as training now, by label: ``since`` (epoch seconds),
        ``node`` and ``plan``. Left behind by a driver that was killed: read it only while a driver is live."""
        return dict(self.study.user_attrs.get(RUNNING_WORK, {}))

    def note_running_work(self, running: dict[str, dict]) -> None:
        self.study.set_user_attr(RUNNING_WORK, running)

    # -- re-evaluation of the final front -----------------------------------------------------------

    @property
    def final(self) -> dict[str, dict[str, dict]]:
        """Every re-evaluation that has run, by target (``trial:N``, ``baseline:NAME``) and seed."""
        return dict(self.study.user_attrs.get(FINAL, {}))

    def record_final(self, target: str, seed: int, record: dict) -> None:
        final = self.final
        self.study.set_user_attr(FINAL, {**final, target: {**final.get(target, {}), str(seed): record}})

    def final_seeds(self, target: str, final: dict | None = None) -> dict[int, float]:
        """The qualities of ``target``'s finished re-evaluations, by seed (from ``final``, read once by the caller)."""
        final = self.final if final is None else final
        return {int(seed): r["quality"] for seed, r in final.get(target, {}).items() if "quality" in r}

    def final_targets(self, fronts: int, points: list[Point] | None = None) -> list[tuple[str, int | str]]:
        """What the re-evaluation trains again, as (target, trial number or baseline name): the points of the
        search's first ``fronts`` non-dominated fronts that score above the quality floor, then the finished baselines
        (``points``: the finished points, where the caller has read them already)."""
        floor = self.reference.quality
        points = self.finished_points() if points is None else points
        points = [p for front in nondominated_fronts(points, fronts) for p in front if p.quality > floor]
        return [(f"trial:{p.trial}", p.trial) for p in points] + [(f"baseline:{name}", name) for name in self.baseline_points()]

    def final_points(self, points: list[Point] | None = None, final: dict | None = None) -> tuple[list[Point], dict[str, Point]]:
        """Re-evaluated trials and baselines as points whose quality is the mean over their seeds (``points`` and
        ``final``: the finished points and the re-evaluations, where the caller has read them already)."""
        final = self.final if final is None else final
        if not final:
            return [], {}
        floor = self.reference.quality

        def averaged(point: Point, target: str) -> Point | None:
            qualities = list(self.final_seeds(target, final).values())
            if not qualities:
                return None
            tests = [r["test_quality"] for r in final[target].values() if r.get("test_quality") is not None]
            return replace(point, quality=float(np.mean(qualities)), std=_std(qualities), seeds=len(qualities),
                           test=float(np.mean(tests)) if tests else None, test_std=_std(tests) if tests else None,
                           floored=sum(q <= floor for q in qualities))

        trials = [averaged(p, f"trial:{p.trial}") for p in (self.finished_points() if points is None else points)]
        baselines = {name: averaged(p, f"baseline:{name}") for name, p in self.baseline_points().items()}
        return [p for p in trials if p is not None], {n: p for n, p in baselines.items() if p is not None}

    # -- trials ------------------------------------------------------------------------------------

    def describe_trial(self, trial: optuna.trial.Trial, plan: Plan, pct: float, memory_gb: float,
                       bracket: int | None = None) -> None:
        """The trial's plan, its share of the model, its estimated memory and, in a search with rungs, its bracket."""
        with self.batched():
            trial.set_user_attr(PLAN, plan.to_dict())
            trial.set_user_attr(PLAN_SUMMARY, plan.describe())
            trial.set_user_attr(TRAINABLE_PCT, pct)
            trial.set_user_attr(MEMORY_ESTIMATE, memory_gb)
            if bracket is not None:
                trial.set_user_attr(BRACKET, bracket)

    def mark_skipped(self, trial: optuna.trial.Trial, reason: str) -> None:
        trial.set_user_attr(SKIPPED, reason)

    def set_run_id(self, trial: optuna.trial.Trial, run_id: str) -> None:
        trial.set_user_attr(MLFLOW_RUN, run_id)

    def finish(self, trial: optuna.trial.Trial, quality: float, params: int, metrics: dict, train_seconds: float,
               peak_memory_mb: float, device: str, node: str = "") -> None:
        train_seconds += trial.user_attrs.get(TRAIN_SECONDS, 0.0)  # and its earlier rungs'
        with self.batched():
            for key, value in ((METRICS, metrics), (TRAIN_SECONDS, train_seconds), (PEAK_MEMORY_MB, peak_memory_mb),
                               (DEVICE, device), (NODE, node)):
                trial.set_user_attr(key, value)
            self.study.tell(trial, [quality, float(params)])

    def fail(self, trial: optuna.trial.Trial, error: str, reason: str | None = None) -> None:
        """A trial that raised; ``reason`` names a known cause (out of memory)."""
        with self.batched():
            trial.set_user_attr(ERROR, error[-2000:])
            if reason is not None:
                trial.set_user_attr(FAILURE, reason)
            self.study.tell(trial, state=States.FAIL)

    def record_rung(self, trial: optuna.trial.Trial, quality: float, loss: float | None, train_seconds: float) -> None:
        """A trial finished a rung before the last: its quality there; it waits, RUNNING, to be sent on or pruned."""
        attrs = trial.user_attrs
        with self.batched():
            trial.set_user_attr(RUNG_QUALITY, [*attrs.get(RUNG_QUALITY, []), quality])
            trial.set_user_attr(RUNG_LOSS, [*attrs.get(RUNG_LOSS, []), loss])
            trial.set_user_attr(TRAIN_SECONDS, attrs.get(TRAIN_SECONDS, 0.0) + train_seconds)
            trial.set_user_attr(RUNG_SECONDS, [*attrs.get(RUNG_SECONDS, []), train_seconds])
            trial.set_user_attr(RUNG_FINISHED, [*attrs.get(RUNG_FINISHED, []), time.time()])

    def send_to_rung(self, trial: optuna.trial.Trial, rung: int) -> None:
        trial.set_user_attr(RUNG, rung)

    def rung_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that finished at least one rung, in every state."""
        return [t for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(RUNG_QUALITY)]

    def rungs_told_nothing(self, least: int) -> list[tuple[int, int, float]]:
        """The rungs so far at which every trial scored the same (``silent_rungs``)."""
        return silent_rungs([t.user_attrs[RUNG_QUALITY] for t in self.rung_trials()], least)

    def prune(self, trial: optuna.trial.Trial) -> None:
        """A paused trial that was not sent on before the search ended; its quality is its last rung's."""
        self.study.tell(trial, state=States.PRUNED)

    def out_of_memory_estimates(self) -> list[float]:
        """The estimated memory of every trial and baseline that ran out of memory."""
        trials = [t.user_attrs[MEMORY_ESTIMATE] for t in self.study.get_trials(deepcopy=False, states=(States.FAIL,))
                  if t.user_attrs.get(FAILURE) == OUT_OF_MEMORY and MEMORY_ESTIMATE in t.user_attrs]
        baselines = [b[MEMORY_ESTIMATE] for b in self.baselines.values() if b.get("reason") == OUT_OF_MEMORY]
        return [float(v) for v in trials + baselines]

    def interrupt(self, trial: optuna.trial.Trial, why: str) -> None:
        """Fail a trial the search stopped before it finished; it does not use up the budget."""
        with self.batched():
            trial.set_user_attr(INTERRUPTED, True)
            trial.set_user_attr(ERROR, f"interrupted: {why}")
            self.study.tell(trial, state=States.FAIL)

    def interrupt_orphans(self) -> list[str]:
        """Trials left RUNNING by a search that was killed are marked interrupted; returns their MLflow runs."""
        runs = []
        for t in self.study.get_trials(deepcopy=False, states=(States.RUNNING,)):
            if t.user_attrs.get(RUNG_QUALITY):  # it finished a rung: it resumes from that rung's checkpoint
                continue
            self.interrupt(optuna.trial.Trial(self.study, t._trial_id), "the search stopped before it finished")
            if MLFLOW_RUN in t.user_attrs:
                runs.append(t.user_attrs[MLFLOW_RUN])
        return runs

    def requeue_interrupted(self) -> list[int]:
        """Queue the plan of every interrupted trial to run again (once); returns their numbers."""
        trained = {self._key(t.params) for t in self.study.get_trials(deepcopy=False, states=(States.COMPLETE, States.WAITING))
                   if SKIPPED not in t.user_attrs}
        done = set(self.study.user_attrs.get(REQUEUED, []))
        numbers = []
        for t in self.study.get_trials(deepcopy=False, states=(States.FAIL,)):
            if t.user_attrs.get(INTERRUPTED) and t.number not in done and t.params:
                if self._key(t.params) not in trained:
                    self.study.enqueue_trial(t.params, skip_if_exists=False)
                    trained.add(self._key(t.params))
                    numbers.append(t.number)
                done.add(t.number)
        self.study.set_user_attr(REQUEUED, sorted(done))
        return numbers

    @staticmethod
    def _key(params: dict) -> tuple:
        return tuple(sorted(params.items()))

    def trained_as(self, params: dict, plan_of: Callable[[dict], Hashable] | None = None) -> optuna.trial.FrozenTrial | None:
        """The finished trial (not a skipped proposal) that trained the plan of ``params``, if one did.

        ``plan_of`` maps parameters to their plan's key; without it, equal parameters are one plan.
        """
        plan_of = plan_of or self._key
        key = plan_of(params)
        return next((t for t in self.completed() if t.params.keys() == params.keys() and plan_of(t.params) == key), None)

    def done(self) -> tuple[int, int]:
        """(trials that count against the budget, of which failed): trained, not skipped nor interrupted.

        In a search with rungs a trial counts from its first rung on, whether it is later pruned or not.
        """
        counted = [t for t in self.study.get_trials(deepcopy=False) if not ({SKIPPED, INTERRUPTED} & set(t.user_attrs))
                   and (t.state in (States.COMPLETE, States.FAIL, States.PRUNED) or t.user_attrs.get(RUNG_QUALITY))]
        return len(counted), sum(1 for t in counted if t.state == States.FAIL)

    def failures(self) -> dict[str, int]:
        """How many trials that count against the budget failed, by reason ("error": the trial raised)."""
        counts: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False, states=(States.FAIL,)):
            if not ({SKIPPED, INTERRUPTED} & set(t.user_attrs)):
                reason = t.user_attrs.get(FAILURE, "error")
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def last_failure(self) -> str | None:
        """What made the last trial that counts against the budget fail (``failure_reason``); None if none failed."""
        failed = [t for t in self.study.get_trials(deepcopy=False, states=(States.FAIL,))
                  if not ({SKIPPED, INTERRUPTED} & set(t.user_attrs))]
        return failure_reason(failed[-1].user_attrs) if failed else None

    def trained(self) -> list[optuna.trial.FrozenTrial]:
        """Every trial that was proposed for training (skipped ones left out)."""
        return [t for t in self.study.get_trials(deepcopy=False) if SKIPPED not in t.user_attrs]

    def completed(self) -> list[optuna.trial.FrozenTrial]:
        """Trials that were trained and finished (skipped ones left out)."""
        return [t for t in self.study.get_trials(deepcopy=False, states=(States.COMPLETE,)) if SKIPPED not in t.user_attrs]

    def finished_points(self) -> list[Point]:
        """Completed, trained trials as points of the (quality, trainable parameters) plane."""
        return [Point(trial=t.number, quality=t.values[0], params=int(t.values[1]),
                      pct=t.user_attrs.get(TRAINABLE_PCT, 0.0), plan=t.user_attrs.get(PLAN_SUMMARY, ""))
                for t in self.completed()]

    def plan_of(self, number: int) -> Plan:
        """The plan trial ``number`` trained (stored by this version or by autopeft 0.1)."""
        from autopeft.workers.plan import Plan  # it loads every method, and peft with them

        try:
            return Plan.from_dict(self.study.get_trials(deepcopy=False)[number].user_attrs[PLAN])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError("run", f"trial {number} stores a plan this version cannot read ({exc})",
                            "use the autopeft version that ran the search") from None

    def trial_info(self, number: int) -> dict:
        """The trial's stored metrics and MLflow run id."""
        attrs = self.study.get_trials(deepcopy=False)[number].user_attrs
        return {"metrics": attrs.get(METRICS, {}), "mlflow_run_id": attrs.get(MLFLOW_RUN)}
