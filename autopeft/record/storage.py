"""The study storage, with its transient failures retried: a locked, busy or unreachable database.

Every storage call that fails with a database error is tried again after 1, 2, 4, 8 and 15
seconds. If it still fails, ``StoreUnavailable`` stops the search (cleanly: submit the job
again to resume), and from then on every call fails at once, so that stopping does not wait.

A trial's parameters and attributes, written one by one, would cost a transaction each (a
proposal of 20 parameters, 20 commits); inside ``batched()`` they go to the database together.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time

import optuna
from optuna.storages import BaseStorage

log = logging.getLogger("autopeft")
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)


class StoreUnavailable(RuntimeError):
    """The study storage kept failing; the search stopped and can be resumed."""


@functools.cache
def transient_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, optuna.exceptions.StorageInternalError


class RetryingStorage(BaseStorage):
    """An Optuna storage whose calls outlive a short database outage."""

    def __init__(self, inner: BaseStorage):
        self._inner = inner
        self._failed: str | None = None
        self._local = threading.local()  # each thread's writes held back by ``batched``

    @contextlib.contextmanager
    def batched(self):
        """Trial parameters and attributes written in the block (by this thread) go to the store in
        one transaction: when the block ends, or before any other call, so that order is kept."""
        if getattr(self._local, "held", None) is not None:  # already batching
            yield
            return
        self._local.held = []
        try:
            yield
        finally:
            held, self._local.held = self._local.held, None
            if held:
                self._retried(lambda: write_together(self._inner, held))

    def _call(self, name: str, *args, **kwargs):
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        held = getattr(self._local, "held", None)
        if held is not None:
            if name in HELD_BACK:
                held.append((name, args, kwargs))
                return None
            if held:
                self._local.held = []
                self._retried(lambda: write_together(self._inner, held))
        return self._retried(lambda: getattr(self._inner, name)(*args, **kwargs))

    def _retried(self, call):
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return call()
            except transient_errors() as exc:
                problem = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                if delay is None:
                    self._failed = (f"the study storage kept failing for {sum(RETRY_DELAYS):.0f} s ({problem}); "
                                    "the search stopped: submit the job again to resume")
                    raise StoreUnavailable(self._failed) from None
                if attempt == 0:
                    log.warning("the study storage failed (%s); trying again", problem)
                time.sleep(delay)


HELD_BACK = frozenset({"set_trial_param", "set_trial_user_attr", "set_trial_system_attr"})


def write_together(storage: BaseStorage, writes: list[tuple[str, tuple, dict]]) -> None:
    """``writes`` (calls of the ``HELD_BACK`` methods) in one transaction where ``storage`` is
    Optuna's database storage (behind its cache); one by one on any other storage."""
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage) or not hasattr(backend, "_set_trial_attr_without_commit") or len(writes) == 1:
        for name, args, kwargs in writes:
            getattr(storage, name)(*args, **kwargs)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(backend.scoped_session, True) as session:
        for name, args, kwargs in writes:
            if name == "set_trial_param":
                backend._set_trial_param_without_commit(session, *_param(*args, **kwargs))
            else:
                model = models.TrialUserAttributeModel if name == "set_trial_user_attr" else models.TrialSystemAttributeModel
                backend._set_trial_attr_without_commit(session, model, *_attr(*args, **kwargs))


def _param(trial_id, param_name, param_value_internal, distribution):
    return trial_id, param_name, param_value_internal, distribution


def _attr(trial_id, key, value):
    return trial_id, key, value


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(RetryingStorage, _name, _forward(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def open_storage(url: str) -> RetryingStorage:
    """The storage at ``url`` (Optuna's own, with its cache), its failures retried.

    Two drivers that open a new store at the same moment both create its schema; the one that
    loses that race sees a database error, and on its next try finds the schema in place.
    """
    import sqlalchemy.exc

    for delay in (0.2, 0.5, 1.0, 2.0, None):
        try:
            return RetryingStorage(optuna.storages.get_storage(url))
        except sqlalchemy.exc.SQLAlchemyError:
            if delay is None:
                raise
            time.sleep(delay)
