"""MLflow tracking: one parent run per search, one nested run per trial."""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from urllib.parse import unquote

from autopeft.job.secrets import split_credentials
from autopeft.record.pareto import Point

PARENT_TAG = "mlflow.parentRunId"
DRAIN_PATIENCE, DRAIN_EVERY = 300.0, 5.0
VIEW_KEY = "autopeft"  # the experiment's shared view (see ``view_path``)
RETURNS_RUN = ("start_search", "start_trial")  # MlflowWriter methods that create a run and return its id
STAND_IN = "pending-"  # how a run id handed out before its run exists begins
RECORD_TAG = "autopeft.record"  # on each run: the id the tracker handed out for it, so that a retry finds it
SETTLE_PATIENCE = 30.0
log = logging.getLogger("autopeft")


@functools.cache
def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing tracking store raises (a server down, a database locked, read-only or gone)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return MlflowException, OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError


def missing_run(exc: BaseException) -> bool:
    """Whether the tracking store answered that a run does not exist: writing again will not help."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def lasting(run_id: str | None) -> str | None:
    """The run id to keep in the study: none for a stand-in, whose run does not exist yet."""
    return None if run_id is None or run_id.startswith(STAND_IN) else run_id


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


def credentials_to_environment(tracking_uri: str) -> str:
    """An MLflow server URI without the user and password it holds, which go to MLflow's own
    variables instead (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``), so that no MLflow message shows them."""
    uri, user, password = split_credentials(tracking_uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user)
        if password is not None:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return uri


_SQLITE_FILES: dict[str, tuple[int, int]] = {}  # SQLite tracking URIs this process opened: (device, inode) of the file


def mlflow_client(tracking_uri: str):
    """An ``MlflowClient`` of ``tracking_uri`` (its credentials moved to MLflow's variables) that reads and writes the
    SQLite file now at the URI's path.

    MLflow keeps one store, and one database engine, per URI for the life of the process. Where that file was
    deleted or replaced since this process opened it (a run directory removed between two searches of one Python
    session), they would go on with the old file: SQLite refuses writes to a deleted one ("attempt to write a
    readonly database"), and every record of the new search would be lost. They are forgotten then, so that MLflow
    opens the file at the path anew.
    """
    from mlflow.tracking import MlflowClient

    uri = credentials_to_environment(tracking_uri)
    path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if path is not None and uri in _SQLITE_FILES and _file_identity(path) != _SQLITE_FILES[uri]:
        _forget_mlflow_store(uri)
    client = MlflowClient(tracking_uri=uri)
    if path is not None:
        client.get_experiment_by_name("Default")  # opens the store: the file exists from here on
        if (identity := _file_identity(path)) is not None:
            _SQLITE_FILES[uri] = identity
    return client


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _forget_mlflow_store(uri: str) -> None:
    """Drop MLflow's cached stores and its database engine of ``uri`` (where this MLflow keeps them)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.tracking._tracking_service import utils
    except ImportError:  # an MLflow that keeps them elsewhere
        return

    engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
    if engine is not None:
        engine.dispose()
    cached = getattr(type(getattr(utils, "_tracking_store_registry", None)), "_get_store_with_resolved_uri", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


class Tracker:
    """Writes a search to MLflow from a background thread, and outlives MLflow outages: MLflow only
    tracks, so neither its latency nor its failure ever holds up a search.

    Every ``MlflowWriter`` method called on the tracker is queued and returns at once; one thread
    writes the queue in order. A method that creates a run (``start_trial``) returns a stand-in id
    at once: later calls may name it anywhere in their arguments (as a key of a mapping too), and
    ``created()`` hands out (stand-in, run id) pairs as runs come to exist; ``run_id()`` resolves
    one, ``settle()`` waits a little for it. ``start_search`` waits for its run. A call that names a
    run the store does not have is dropped with a warning: that is no outage.

    While the tracking store fails, a call is kept and a warning is shown once; the next call
    first writes the backlog, in order. ``finish_search`` waits until the queue is written and
    tries one last time, saying how many records could not be written.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # an MLflow server that is down: fail fast
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self._open = lambda: MlflowWriter(tracking_uri, experiment, artifact_root)
        self._writer: MlflowWriter | None = None
        self._backlog: list[tuple[str, tuple, dict, str | None]] = []
        self._ids: dict[str, str] = {}  # stand-in run id -> the run's id once created
        self._created: list[tuple[str, str]] = []
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def parent_id(self) -> str | None:
        return self._writer.parent_id if self._writer is not None else None

    @property
    def backlog(self) -> int:
        """Records kept while the tracking store fails."""
        return len(self._backlog)

    def __getattr__(self, name: str):
        if name.startswith("_") or not callable(getattr(MlflowWriter, name, None)):
            raise AttributeError(name)
        return functools.partial(self._call, name)

    def run_id(self, stand_in: str) -> str:
        """The run a stand-in id stands for, once it exists (else the stand-in)."""
        with self._lock:
            return self._ids.get(stand_in, stand_in)

    def settle(self, stand_in: str, patience: float = SETTLE_PATIENCE) -> str:
        """The run a stand-in id stands for, waiting up to ``patience`` seconds for a working MLflow to
        create it (a trial can finish before its run exists); at once the stand-in while MLflow fails."""
        deadline = time.monotonic() + patience
        while lasting(run_id := self.run_id(stand_in)) is None and not self._backlog and time.monotonic() < deadline:
            if not self._queue.unfinished_tasks:
                break
            time.sleep(0.05)
        return run_id

    def created(self) -> list[tuple[str, str]]:
        """(stand-in, run id) of every run created since the last call."""
        with self._lock:
            created, self._created = self._created, []
        return created

    def flush(self) -> None:
        """Wait until every queued call is written (or kept, while MLflow fails)."""
        while self._queue.unfinished_tasks:
            with self._queue.all_tasks_done:
                self._queue.all_tasks_done.wait(0.2)

    def _call(self, name: str, *args, **kwargs):
        stand_in = STAND_IN + uuid.uuid4().hex if name in RETURNS_RUN else None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="autopeft-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((name, args, kwargs, stand_in))
        if name in ("start_search", "finish_search"):
            self.flush()
        return self.run_id(stand_in) if name == "start_search" else stand_in

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            try:
                self._handle(call)
            except BaseException:  # a record that cannot be written is lost; the search goes on
                log.warning("an MLflow record (%s) could not be written:\n%s", call[0], traceback.format_exc(limit=3))
            finally:
                self._queue.task_done()

    def _handle(self, call: tuple[str, tuple, dict, str | None]) -> None:
        name = call[0]
        try:
            written = self._flush()
            if written:
                log.warning("MLflow is back: %d kept records written", written)
            self._write_or_drop(call)
        except store_errors() as exc:
            if not self._backlog:
                log.warning("MLflow failed (%s); the search goes on, and its records are kept until MLflow is back",
                            str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__)
            self._backlog.append(call)
            if name == "finish_search":
                self._drain()

    def _resolve(self, value):
        """``value`` with every stand-in id in it replaced by its run's id, in mappings and lists too."""
        if isinstance(value, str):
            return self.run_id(value)
        if isinstance(value, dict):
            return {self._resolve(k): self._resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(map(self._resolve, value))
        return value

    def _write(self, name: str, args: tuple, kwargs: dict, stand_in: str | None):
        if self._writer is None:
            self._writer = self._open()
        kwargs = {k: self._resolve(v) for k, v in kwargs.items()} | ({"record": stand_in} if stand_in is not None else {})
        result = getattr(self._writer, name)(*map(self._resolve, args), **kwargs)
        if stand_in is not None:
            with self._lock:
                self._ids[stand_in] = result
                self._created.append((stand_in, result))
        return result

    def _write_or_drop(self, call: tuple[str, tuple, dict, str | None]) -> None:
        """Write a call; one that names a run the store does not have is dropped with a warning, since
        writing it again will not help (other store errors propagate: the call is kept)."""
        try:
            self._write(*call)
        except store_errors() as exc:
            if not missing_run(exc):
                raise
            log.warning("an MLflow record (%s) could not be written: %s", call[0], str(exc).strip().splitlines()[0][:300])

    def _flush(self) -> int:
        """Write the backlog in order (a store error leaves the rest kept); the number it held."""
        held = len(self._backlog)
        while self._backlog:
            self._write_or_drop(self._backlog[0])
            self._backlog.pop(0)
        return held

    def _drain(self) -> None:
        """At the end of a search: wait up to ``DRAIN_PATIENCE`` seconds for MLflow to take the backlog."""
        log.warning("waiting up to %.0f s for MLflow to come back and take %d kept records (Ctrl-C gives up)",
                    DRAIN_PATIENCE, len(self._backlog))
        deadline = time.monotonic() + DRAIN_PATIENCE
        while self._backlog and time.monotonic() < deadline:
            time.sleep(DRAIN_EVERY)
            try:
                self._flush()
                log.warning("MLflow is back: every kept record is written")
            except store_errors():
                continue
        if self._backlog:
            log.warning("%d MLflow records could not be written: MLflow is still failing", len(self._backlog))


def view_path(experiment_id: str) -> str:
    """The MLflow UI's page of a search: its runs in the shared view, in the model-training workspace."""
    return f"/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"


def shared_view(parent_id: str) -> dict:
    """The MLflow UI's view of a search (a shared view, stored on the experiment): the search's run
    expanded over its trials; quality, trainable parameters and plan as columns; and a chart of
    quality against trainable parameters first in the chart view."""
    columns = ["metrics.`quality`", "metrics.`trainable_params`", "metrics.`trainable_pct`", "params.`plan`",
               "metrics.`train_seconds`", "metrics.`hypervolume`", "metrics.`front_size`"]
    section = {"uuid": "autopeft-front", "name": "Quality against trainable parameters", "display": True,
               "isReordered": False, "deleted": False, "isGenerated": False}
    chart = {"uuid": "autopeft-quality-params", "type": "SCATTER", "metricSectionId": section["uuid"], "isGenerated": False,
             "deleted": False, "runsCountToCompare": 500, "xaxis": {"key": "trainable_params", "type": "METRIC"},
             "yaxis": {"key": "quality", "type": "METRIC"}}
    return {"selectedColumns": columns, "columnOrder": columns, "runsExpanded": {parent_id: True}, "runsHiddenMode": "SHOW_ALL",
            "compareRunCharts": [chart], "compareRunSections": [section], "isAccordionReordered": False}


class MlflowWriter:
    """Writes a search to MLflow; the tracking URI is a SQLite file by default."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        _quiet_mlflow()
        self.client = mlflow_client(tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        # a model-training experiment: the MLflow UI opens on its runs, not on an empty GenAI overview
        self.client.set_experiment_tag(self.experiment_id, "mlflow.experimentKind", "custom_model_development")
        self.parent_id: str | None = None
        self._tried: set[str] = set()  # records whose run creation was attempted

    def start_search(self, name: str, params: dict[str, object], artifacts: dict[str, str], resume_id: str | None,
                     tags: dict[str, str] | None = None, record: str | None = None) -> str:
        """Open (or reopen, on resume) the parent run and record the job, the space and the reference;
        ``tags`` describe the search in the runs table (sampler, reference point)."""
        tags = {"autopeft.kind": "search", "autopeft.status": "running", **(tags or {})}
        if resume_id is not None and self._exists(resume_id):
            self.parent_id = resume_id
            self.client.update_run(resume_id, status="RUNNING")
            for key, value in tags.items():
                self.client.set_tag(resume_id, key, value)
            return resume_id
        self.parent_id = self._create_run(name, tags, record)
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(shared_view(self.parent_id)))
        self._log_params(self.parent_id, params)
        self._log_texts(self.parent_id, artifacts)
        return self.parent_id

    def _create_run(self, name: str, tags: dict[str, str], record: str | None) -> str:
        """Create a run once per ``record`` (the id the tracker handed out for it). A call written again
        after MLflow failed part-way takes the run its first attempt created, if MLflow has it, rather
        than leave that run RUNNING beside a second one."""
        if record is not None and record in self._tried:
            found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RECORD_TAG}` = '{record}'",
                                            max_results=1)
            if found:
                return found[0].info.run_id
        if record is not None:
            self._tried.add(record)
            tags = {**tags, RECORD_TAG: record}
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def kill_trial(self, run_id: str, why: str) -> None:
        """Close the run of a trial the search stopped before it finished (status KILLED); a run the
        tracking store no longer has is left alone."""
        if self._exists(run_id):
            self.client.set_tag(run_id, "autopeft.error", why)
            self.client.set_terminated(run_id, status="KILLED")

    def start_trial(self, number: int | None, params: dict[str, object], baseline: str | None = None,
                    final: tuple[str, int] | None = None, record: str | None = None) -> str:
        """A nested run for a search trial (``number``), a named baseline, or a re-evaluation
        (``final``: the target, ``trial:N`` or ``baseline:NAME``, and the seed)."""
        if final is not None:
            target, seed = final
            name = f"final-{target.replace(':', '-')}-seed{seed}"
            tags = {"autopeft.kind": "final", "autopeft.final_of": target, "autopeft.seed": str(seed)}
        elif baseline is not None:
            name, tags = f"baseline-{baseline}", {"autopeft.kind": "baseline", "autopeft.baseline": baseline}
        else:
            name, tags = f"trial-{number:03d}", {"autopeft.kind": "trial", "autopeft.trial": str(number)}
        run_id = self._create_run(name, {PARENT_TAG: self.parent_id, **tags}, record)
        self._log_params(run_id, params)
        return run_id

    def finish_trial(self, run_id: str, metrics: dict[str, float], adapter_dir: Path | None,
                     tags: dict[str, str] | None = None) -> None:
        """Close a trial's run with its metrics, its adapter and ``tags`` (where it ran)."""
        from mlflow.entities import Metric, RunTag

        now = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items() if v])
        if adapter_dir is not None:
            self.client.log_artifacts(run_id, str(adapter_dir), artifact_path="adapter")
        self.client.set_terminated(run_id, status="FINISHED")

    def log_rung(self, run_id: str, rung: int, quality: float, train_seconds: float) -> None:
        """A trial finished a rung before the last: its quality and training seconds so far, by rung."""
        from mlflow.entities import Metric

        now = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric("rung_quality", float(quality), now, rung),
                                               Metric("train_seconds", float(train_seconds), now, rung)])

    def prune_trial(self, run_id: str, why: str) -> None:
        """A trial that stopped at a rung before the last: it has no final quality."""
        self.client.set_tag(run_id, "autopeft.pruned", why)
        self.client.set_terminated(run_id, status="FINISHED")

    def note_retry(self, run_id: str, attempt: int, error: str) -> None:
        """A trial whose worker was lost runs again (``attempt`` re-runs so far)."""
        self.client.set_tag(run_id, "autopeft.retries", str(attempt))
        self.client.set_tag(run_id, "autopeft.lost_worker", error[-2000:])

    def fail_trial(self, run_id: str, error: str, reason: str | None = None) -> None:
        self.client.set_tag(run_id, "autopeft.error", error[:5000])
        if reason is not None:
            self.client.set_tag(run_id, "autopeft.failure", reason)
        self.client.set_terminated(run_id, status="FAILED")

    def log_front(self, front: list[Point], hypervolume: float, step: int | None, page: str | None,
                  baselines: dict[str, dict] | None = None) -> None:
        """Add a hypervolume point to the parent run at ``step`` (the trials finished) and, with ``page``
        (the interactive chart), replace its Pareto table."""
        from mlflow.entities import Metric

        now = _now_ms()
        metrics = {"hypervolume": hypervolume, "front_size": len(front)}
        if front:
            metrics["best_quality"] = max(p.quality for p in front)
        if step is not None:
            self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        if page is None:
            return
        rows = [p.to_dict() for p in front]
        header = "trial,quality,params,pct,plan\n"
        csv = header + "".join(f"{p.trial},{p.quality:.6f},{p.params},{p.pct:.6f},\"{p.plan}\"\n" for p in front)
        artifacts: dict[str, str | bytes] = {"pareto.json": json.dumps(rows, indent=2), "pareto.csv": csv, "pareto.html": page}
        if baselines:
            artifacts["baselines.json"] = json.dumps(baselines, indent=2)
        self._log_texts(self.parent_id, artifacts)

    def log_final_front(self, front: list[Point], hypervolume: float, baselines: dict[str, Point],
                        runs: dict[str, Point], points: list[Point] | None = None) -> None:
        """The front re-evaluated over seeds (mean and std per point) on the parent run, with ``points`` (every
        re-evaluated trial, on that front or not), and each re-evaluated point's mean and std on its own run, and
        those of its test scores where the task has test examples (``runs``: run id to point)."""
        for run_id, p in runs.items():
            self.client.log_metric(run_id, "final_quality_mean", p.quality)
            self.client.log_metric(run_id, "final_seeds", p.seeds)
            if p.std is not None:  # one seed has none
                self.client.log_metric(run_id, "final_quality_std", p.std)
            if p.test is not None:
                self.client.log_metric(run_id, "final_test_mean", p.test)
            if p.test_std is not None:
                self.client.log_metric(run_id, "final_test_std", p.test_std)
        self.client.log_metric(self.parent_id, "final_hypervolume", hypervolume)
        self.client.log_metric(self.parent_id, "final_front_size", len(front))
        self._log_texts(self.parent_id, {"final_front.json": json.dumps(
            {"front": [p.to_dict() for p in front], "points": [p.to_dict() for p in points or front],
             "baselines": {n: p.to_dict() for n, p in baselines.items()}}, indent=2)})

    def log_chart(self, name: str, png: bytes) -> None:
        """Replace a chart of the parent run."""
        self._log_texts(self.parent_id, {name: png})

    def finish_search(self, status: str = "FINISHED", state: str = "finished") -> None:
        """Close the parent run; ``state`` is its ``autopeft.status`` tag (finished, stopped, failed)."""
        if self.parent_id is not None:
            self.client.set_tag(self.parent_id, "autopeft.status", state)
            self.client.set_terminated(self.parent_id, status=status)

    def _log_params(self, run_id: str, params: dict[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _log_texts(self, run_id: str, files: dict[str, str | bytes]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, content in files.items():
                path = Path(tmp) / name
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
            self.client.log_artifacts(run_id, tmp)


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """A nested mapping as flat MLflow params: ``{"a": {"b": 1}}`` becomes ``{"a.b": 1}``."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
