"""The study storage, with its transient failures retried: a locked, busy or unreachable database.

Every storage call that fails with a database error is tried again after 1, 2, 4, 8 and 15
seconds. If it still fails, ``StoreUnavailable`` stops the search (cleanly: submit the job
again to resume), and from then on every call fails at once, so that stopping does not wait.
"""

from __future__ import annotations

import functools
import logging
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

    def _call(self, name: str, *args, **kwargs):
        if self._failed is not None:
            raise StoreUnavailable(self._failed)
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return getattr(self._inner, name)(*args, **kwargs)
            except transient_errors() as exc:
                problem = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                if delay is None:
                    self._failed = (f"the study storage kept failing for {sum(RETRY_DELAYS):.0f} s ({problem}); "
                                    "the search stopped: submit the job again to resume")
                    raise StoreUnavailable(self._failed) from None
                if attempt == 0:
                    log.warning("the study storage failed (%s); trying again", problem)
                time.sleep(delay)


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
