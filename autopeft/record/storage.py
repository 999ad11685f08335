"""The study storage, with its transient failures retried: a locked, busy or unreachable database.

Every storage call that fails with a database error is tried again after 1, 2, 4, 8 and 15
seconds. If it still fails, ``StoreUnavailable`` stops the search (cleanly: submit the job
again to resume), and from then on every call fails at once, so that stopping does not wait.

A trial's parameters and attributes, written one by one, would cost a transaction each (a
proposal of 20 parameters, 20 commits); inside ``batched()`` they go to the database together.

The driver that holds a study's lease is the one writer of its trials, so it keeps them in
memory as it writes them (``SoleWriterStorage``) instead of reading them back from the database.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import threading
import time
from collections.abc import Container
from datetime import datetime

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

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

    def __init__(self, inner: SoleWriterStorage):
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
                self._retried(lambda: self._inner.write_together(held))

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
                self._retried(lambda: self._inner.write_together(held))
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


def _param(trial_id, param_name, param_value_internal, distribution):
    return trial_id, param_name, param_value_internal, distribution


def _attr(trial_id, key, value):
    return trial_id, key, value


class SoleWriterStorage(BaseStorage):
    """Optuna's database storage for the driver that alone writes a study's trials (it holds the
    study's lease): every write goes to the database first, then to the trials kept in memory, and
    trials are read from memory. Optuna's own cache reads every unfinished trial back from the
    database on each read of the study's trials; with 16 trials in flight that re-reading was most of
    a driver's time. Study-level records (the lease among them) are read from the database each
    time: another driver may write those.
    """

    def __init__(self, backend: RDBStorage):
        self._backend = backend
        self._lock = threading.RLock()
        self._studies: dict[int, list[FrozenTrial]] = {}  # each loaded study's trials, by number
        self._where: dict[int, tuple[int, int]] = {}  # trial id: (study id, number)

    def _trials(self, study_id: int) -> list[FrozenTrial]:
        with self._lock:
            if study_id not in self._studies:
                self._load(study_id)
            return self._studies[study_id]

    def _load(self, study_id: int) -> None:
        trials = sorted(self._backend.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
        self._studies[study_id] = trials
        self._where.update({t._trial_id: (study_id, t.number) for t in trials})

    def _distribution(self, trial_id: int, param: str):
        """The distribution of ``param`` in the first trial of the study that has it (as the database checks it)."""
        with self._lock:
            where = self._where.get(trial_id)
            trials = self._studies[where[0]] if where is not None else []
            return next((t.distributions[param] for t in trials if param in t.distributions), None)

    def _known(self, trial_id: int) -> FrozenTrial | None:
        where = self._where.get(trial_id)
        return None if where is None else self._studies[where[0]][where[1]]

    def _replace(self, trial_id: int, change) -> None:
        """Apply ``change`` to a copy of the trial, which then takes its place (earlier readers keep theirs)."""
        with self._lock:
            trial = self._known(trial_id)
            if trial is None:
                return
            trial = copy.copy(trial)
            change(trial)
            study_id, number = self._where[trial_id]
            self._studies[study_id][number] = trial

    # -- trials: written through, read from memory ---------------------------------------------

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trials = self._trials(study_id)
        created = self._backend._create_new_trial(study_id, template_trial)
        with self._lock:
            if created.number != len(trials):  # trials this driver did not write: read the study again
                self._load(study_id)
            else:
                trials.append(created)
                self._where[created._trial_id] = (study_id, created.number)
        return created._trial_id

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution) -> None:
        self.write_together([("set_trial_param", (trial_id, param_name, param_value_internal, distribution), {})])

    def set_trial_user_attr(self, trial_id: int, key: str, value) -> None:
        self.write_together([("set_trial_user_attr", (trial_id, key, value), {})])

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        self.write_together([("set_trial_system_attr", (trial_id, key, value), {})])

    def write_together(self, writes: list[tuple[str, tuple, dict]]) -> None:
        """``HELD_BACK`` writes in one transaction, then in memory. Written one by one, as Optuna
        writes them, where a trial is not in memory (a study not read here) or where some of the
        writes reached the database already (a commit whose reply was lost)."""
        import sqlalchemy.exc

        with self._lock:
            trials = {args[0]: self._known(args[0]) for _, args, _ in writes}
        together = all(trial is not None for trial in trials.values())
        if together:
            try:
                self._insert_and_update(writes, trials)
            except sqlalchemy.exc.IntegrityError:
                together = False
        if not together:
            for name, args, kwargs in writes:
                getattr(self._backend, name)(*args, **kwargs)
        for name, args, kwargs in writes:
            self._apply(name, args, kwargs)

    def _insert_and_update(self, writes: list[tuple[str, tuple, dict]], trials: dict[int, FrozenTrial]) -> None:
        """One transaction. What the database would look up for each write (the trial's state, a
        parameter's distribution in earlier trials, whether an attribute exists) is known here, so
        the transaction only inserts and updates."""
        from optuna.distributions import check_distribution_compatibility, distribution_to_json
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        written = set()  # attributes inserted by this transaction
        with _create_scoped_session(self._backend.scoped_session) as session:
            for name, args, kwargs in writes:
                trial = trials[args[0]]
                self.check_trial_is_updatable(trial._trial_id, trial.state)
                if name == "set_trial_param":
                    trial_id, param, internal, distribution = _param(*args, **kwargs)
                    previous = self._distribution(trial_id, param)
                    if previous is not None:
                        check_distribution_compatibility(previous, distribution)
                    session.add(models.TrialParamModel(trial_id=trial_id, param_name=param, param_value=internal,
                                                       distribution_json=distribution_to_json(distribution)))
                    continue
                trial_id, key, value = _attr(*args, **kwargs)
                user = name == "set_trial_user_attr"
                model = models.TrialUserAttributeModel if user else models.TrialSystemAttributeModel
                if key in (trial.user_attrs if user else trial.system_attrs) or (model, trial_id, key) in written:
                    session.query(model).filter(model.trial_id == trial_id, model.key == key).update(
                        {model.value_json: json.dumps(value)})
                else:
                    session.add(model(trial_id=trial_id, key=key, value_json=json.dumps(value)))
                    written.add((model, trial_id, key))

    def _apply(self, name: str, args: tuple, kwargs: dict) -> None:
        if name == "set_trial_param":
            trial_id, param, internal, distribution = _param(*args, **kwargs)

            def change(trial):
                trial.params = {**trial.params, param: distribution.to_external_repr(internal)}
                trial.distributions = {**trial.distributions, param: distribution}
        else:
            trial_id, key, value = _attr(*args, **kwargs)
            field = "user_attrs" if name == "set_trial_user_attr" else "system_attrs"

            def change(trial):
                setattr(trial, field, {**getattr(trial, field), key: value})
        self._replace(trial_id, change)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values=None) -> bool:
        if not self._backend.set_trial_state_values(trial_id, state, values):
            self._refresh(trial_id)
            return False
        now = datetime.now()

        def change(trial):
            trial.state = state
            if values is not None:
                trial.values = list(values)
            if state == TrialState.RUNNING:
                trial.datetime_start = now
            if state.is_finished():
                trial.datetime_complete = now
        self._replace(trial_id, change)
        return True

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._backend.set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._replace(trial_id, lambda t: setattr(t, "intermediate_values", {**t.intermediate_values, step: intermediate_value}))

    def _refresh(self, trial_id: int) -> None:
        fresh = self._backend.get_trial(trial_id)
        with self._lock:
            if trial_id in self._where:
                study_id, number = self._where[trial_id]
                self._studies[study_id][number] = fresh

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """A copy whose dicts the caller may change (Optuna's ``Trial`` keeps one and writes into it)."""
        with self._lock:
            trial = self._known(trial_id)
        if trial is None:
            return self._backend.get_trial(trial_id)
        trial = copy.copy(trial)
        for name in ("params", "distributions", "user_attrs", "system_attrs", "intermediate_values"):
            setattr(trial, name, dict(getattr(trial, name)))
        return trial

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        with self._lock:
            trials = [t for t in self._trials(study_id) if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        trials = self._trials(study_id)
        if 0 <= trial_number < len(trials):
            return trials[trial_number]._trial_id
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def get_trial_number_from_id(self, trial_id: int) -> int:
        where = self._where.get(trial_id)
        return where[1] if where is not None else self._backend.get_trial_number_from_id(trial_id)

    # -- studies: read and written in the database ---------------------------------------------

    def create_new_study(self, directions, study_name: str | None = None) -> int:
        return self._backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._backend.delete_study(study_id)
        with self._lock:
            for trial in self._studies.pop(study_id, []):
                self._where.pop(trial._trial_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int):
        return self._backend.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self):
        return self._backend.get_all_studies()


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(RetryingStorage, _name, _forward(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def open_storage(url: str) -> RetryingStorage:
    """The storage at ``url`` for the driver that holds (or is about to take) the lease of the studies
    it writes: a database's trials kept in memory (``SoleWriterStorage``), its failures retried.

    Two drivers that open a new store at the same moment both create its schema; the one that
    loses that race sees a database error, and on its next try finds the schema in place.
    """
    import sqlalchemy.exc

    for delay in (0.2, 0.5, 1.0, 2.0, None):
        try:
            return RetryingStorage(SoleWriterStorage(RDBStorage(url)))
        except sqlalchemy.exc.SQLAlchemyError:
            if delay is None:
                raise
            time.sleep(delay)
