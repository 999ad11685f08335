"""One driver per study: a lease with a heartbeat, kept on the study in its storage.

A driver takes the lease before it touches the study's trials or MLflow, renews it every
``HEARTBEAT`` seconds while it runs and gives it back when it stops. A second driver for the
same study is refused with one message naming the running one. A lease whose heartbeat is
older than ``STALE_AFTER`` seconds (its driver was killed or lost), or whose driver process is
gone from this very machine, is taken over; only then are that driver's trials marked
interrupted and run again.

Taking a lease writes it, waits ``SETTLE`` seconds and reads it back, so that of two drivers
started at the same moment only the last writer goes on.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime, timezone

from autopeft.errors import UserError
from autopeft.record.study import LEASE

HEARTBEAT = 10.0
STALE_AFTER = 60.0
SETTLE = 1.0


class LeaseLost(RuntimeError):
    """Another driver took this study over (this one stopped renewing its lease in time)."""


def _alive_here(lease: dict) -> bool:
    """Whether the lease's driver process still runs, as far as this machine can tell."""
    if lease.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True
    return True


def _live(lease: dict | None) -> bool:
    """Whether ``lease`` belongs to a driver that still runs: a fresh heartbeat, and a process that is
    not known to be gone."""
    if lease is None:
        return False
    return time.time() - float(lease.get("heartbeat", 0)) <= STALE_AFTER and _alive_here(lease)


def live_driver(study) -> dict | None:
    """The lease of the driver searching ``study`` now (host, pid, since, heartbeat), None when none is."""
    lease = study._storage.get_study_user_attrs(study._study_id).get(LEASE)
    return lease if _live(lease) else None


class Lease:
    """This driver's lease on ``study``."""

    def __init__(self, study, name: str):
        self.study, self.name = study, name
        self.token = uuid.uuid4().hex
        self.renewed = 0.0
        self.since = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def _current(self) -> dict | None:
        return self.study._storage.get_study_user_attrs(self.study._study_id).get(LEASE)

    def _write(self) -> None:
        now = time.time()
        self.study.set_user_attr(LEASE, {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                                         "since": self.since, "heartbeat": now})
        self.renewed = now

    def acquire(self) -> None:
        """Take the lease, or raise ``UserError`` naming the driver that holds it."""
        self._refuse_if_held(self._current())
        self._write()
        time.sleep(SETTLE)
        held = self._current()
        if held is None or held.get("token") != self.token:
            self._refuse_if_held(held, racing=True)

    def _refuse_if_held(self, lease: dict | None, racing: bool = False) -> None:
        if lease is None or lease.get("token") == self.token:
            return
        if not racing and (lease.get("host"), lease.get("pid")) == (socket.gethostname(), os.getpid()):
            return  # left by an earlier search of this very process
        age = time.time() - float(lease.get("heartbeat", 0))
        if not racing and not _live(lease):
            return
        raise UserError(
            "run", f"job '{self.name}' is being searched by process {lease.get('pid')} on {lease.get('host')} "
            f"since {lease.get('since')} (last heartbeat {age:.0f} s ago)",
            f"wait for it to finish or stop it; a driver silent for {STALE_AFTER:.0f} s is taken over",
        )

    def renew(self) -> None:
        """Renew the heartbeat (at most every ``HEARTBEAT`` seconds); ``LeaseLost`` if another driver took over."""
        if time.time() - self.renewed < HEARTBEAT:
            return
        held = self._current()
        if held is not None and held.get("token") != self.token:
            raise LeaseLost(f"process {held.get('pid')} on {held.get('host')} took over job '{self.name}'")
        self._write()

    def release(self) -> None:
        held = self._current()
        if held is not None and held.get("token") == self.token:
            self.study.set_user_attr(LEASE, None)
