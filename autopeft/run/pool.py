"""The worker pool: Ray actors that run trials, one per trial slot, each keeping its model between trials."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from importlib import import_module
from pathlib import Path

from autopeft.errors import UserError
from autopeft.job.secrets import mask_uri
from autopeft.job.spec import JobSpec
from autopeft.workers.trial import load_trainer
from autopeft.workers.types import TrialRequest


def cluster_address(job: JobSpec) -> str | None:
    """The Ray cluster a search runs on: ``stores.ray_address`` (``--address``), else ``RAY_ADDRESS``
    (set by ``ray job submit``); None runs Ray on this machine."""
    return job.stores.ray_address or os.environ.get("RAY_ADDRESS") or None


def cluster_field(job: JobSpec) -> str:
    """Where the cluster address comes from, as a message names it."""
    return "stores.ray_address" if job.stores.ray_address else "RAY_ADDRESS"


# Ray runs its workers at niceness 15 (its raylet and stores first); a search's workers are its whole work, so they
# run at the driver's priority: at 15, any other process on the machine (a second search, a build, the sampler's
# own fitting) takes nearly all of the CPU from them, and trials crawl or time out.
WORKER_NICENESS = "RAY_worker_niceness"


def init_ray(job: JobSpec):
    """Ray, started locally on demand or connected to the job's cluster.

    With no cluster named, the search starts a Ray of its own on this machine: never one that ``ray start``
    left running here, nor the dead one whose address a killed ``ray start`` left behind (Ray's own
    default, which would wait for that address forever)."""
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault(WORKER_NICENESS, "0")  # for the workers of the Ray it starts here
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    on_sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    address = cluster_address(job)
    if address:
        connect_cluster(ray, job, address, kwargs)
    else:
        ray.init(address="local", **kwargs)
    if callable(on_sigterm):  # Ray replaces the driver's SIGTERM handler with a crash dump: keep the caller's
        signal.signal(signal.SIGTERM, on_sigterm)
    return ray


CLUSTER_SESSION_RETRIES = (5.0, 10.0, 20.0)  # seconds between tries when the head cannot yet start a client's session


def connect_cluster(ray, job: JobSpec, address: str, kwargs: dict) -> None:
    """Join the cluster at ``address`` as a driver, with the ``autopeft`` package shipped to its nodes.

    A Ray client head that answers but fails to start this client's session (its runtime-env agent or the
    session's server not up yet: a head that has just started, or one under load) is tried again a few times;
    the message names the head's own reason when it keeps failing."""
    modules = shipped_package()
    for wait in (*CLUSTER_SESSION_RETRIES, None):
        try:
            ray.init(address=address, runtime_env={"py_modules": [modules], "env_vars": {WORKER_NICENESS: "0"}},
                     **kwargs)
            return
        except ConnectionAbortedError as exc:  # the head answered, then failed to set up this client's session
            reason = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), "no reason given")
            if wait is None:
                raise UserError(cluster_field(job), f"the Ray head at {mask_uri(address)} could not start a session for "
                                f"this search, {len(CLUSTER_SESSION_RETRIES) + 1} tries: {reason}",
                                "see ray_client_server*.err in the head's Ray logs (session_latest/logs), or submit with "
                                "'ray job submit' (RAY_ADDRESS) instead of the Ray client") from None
            print(f"autopeft: the Ray head could not start a session yet ({reason}); trying again in {wait:.0f} s",
                  file=sys.stderr, flush=True)
            time.sleep(wait)
        except ConnectionError as exc:  # something answers at the address, but not a Ray cluster's head
            raise UserError(cluster_field(job), str(exc).splitlines()[0],
                            "give the head's Ray address: ray://HOST:10001 (Ray client) or HOST:6379 (GCS)") from None


def shipped_package() -> str:
    """A folder holding the ``autopeft`` package as it installs, for Ray to ship to cluster nodes.

    An installed wheel is that folder already; an editable install keeps ``workers/``,
    ``dashboards/`` and ``search_spaces/`` beside ``autopeft/``, so they are copied in.
    """
    import autopeft

    root = Path(autopeft.__file__).parent
    subpackages = ("workers", "dashboards", "search_spaces")
    if all((root / sub).is_dir() for sub in subpackages):
        return str(root)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    staging = Path(tempfile.mkdtemp(prefix="autopeft-ship-")) / "autopeft"
    atexit.register(shutil.rmtree, staging.parent, ignore_errors=True)  # Ray uploads it at init; nothing reads it after
    shutil.copytree(root, staging, ignore=ignore)
    for sub in subpackages:
        shutil.copytree(Path(import_module(f"autopeft.{sub}").__file__).parent, staging / sub, ignore=ignore)
    return str(staging)


def trainer_for_workers(ray, trainer: str | None):
    """The job's trial function, pickled by value unless it comes from an installed package.

    A user's module beside the job file then reaches every worker, local or on a cluster.
    """
    if trainer is None:
        return None
    function = load_trainer(trainer)
    module = sys.modules[function.__module__]
    origin = Path(getattr(module, "__file__", "") or "")
    if not any(part in ("site-packages", "dist-packages") for part in origin.parts):
        ray.cloudpickle.register_pickle_by_value(module)
    return function


def ready_results(ray, refs: list, timeout: float | None = None) -> list:
    """The result references that are ready, once one is (all of them, not only the first); none when none
    is within ``timeout`` seconds."""
    ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
    if ready and rest:
        ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
    return ready


class WorkerPool:
    """``job.budget.parallel`` trial workers (Ray actors); a worker that died is replaced."""

    def __init__(self, ray, job: JobSpec, data_ref):
        from autopeft.workers.trial import TrialWorker

        self.ray = ray
        self.job = job
        self.data_ref = data_ref
        self.actor_cls = ray.remote(TrialWorker).options(  # spread over a cluster's nodes, so that losing one costs least
            num_cpus=job.resources.cpus, num_gpus=job.resources.gpus, max_concurrency=1, scheduling_strategy="SPREAD"
        )
        self.trainer = trainer_for_workers(ray, job.trainer)
        self.nodes: dict = {}  # actor id -> the reference of the node it runs on
        self.idle = [self._new() for _ in range(job.budget.parallel)]

    def _new(self):
        actor = self.actor_cls.remote(self.data_ref, max(1, int(self.job.resources.cpus)), self.trainer)
        self.nodes[actor._actor_id] = actor.node.remote()
        return actor

    def node(self, actor) -> str:
        """Where ``actor`` runs (``host (ray node 1a2b3c4d)``); empty while it is starting (this never waits)."""
        ref = self.nodes.get(actor._actor_id)
        if ref is None or not self.ray.wait([ref], timeout=0)[0]:
            return ""
        try:
            return self.ray.get(ref)
        except Exception:  # a worker that died: the trial is retried or fails, and says so
            return ""

    def submit(self, request: TrialRequest):
        """Start ``request`` on an idle worker; returns (worker, result reference)."""
        actor = self.idle.pop()
        return actor, actor.run.remote(request)

    def run_one(self, request: TrialRequest):
        """Run ``request`` on a worker and wait for its ``TrialResult``."""
        actor, ref = self.submit(request)
        try:
            return self.ray.get(ref)
        finally:
            self.release(actor, healthy=True)

    def release(self, actor, healthy: bool) -> None:
        self.idle.append(actor if healthy else self._new())

    def wait(self, refs: list, timeout: float | None = None) -> list:
        return ready_results(self.ray, refs, timeout)

    def stop(self, actor) -> None:
        """Kill a worker (its trial is abandoned) and put a fresh one in its place."""
        self.ray.kill(actor, no_restart=True)
        self.release(actor, healthy=False)

    def died(self, exc: Exception) -> bool:
        return isinstance(exc, self.ray.exceptions.RayActorError)
