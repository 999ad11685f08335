"""The Python API: everything the CLI does, as function calls."""

from __future__ import annotations

from pathlib import Path

from autopeft.job.load import load_job
from autopeft.job.spec import JobSpec
from autopeft.record.pareto import Point, Reference, pareto_front


def _job(job: JobSpec | str | Path) -> JobSpec:
    return job if isinstance(job, JobSpec) else load_job(job)


def prepare(job: JobSpec | str | Path):
    """Check a job against its model, data, space and budget without writing anything; returns a ``Prepared``.

    Every error a user can cause is raised here, as a ``UserError``.
    """
    from autopeft.run.prepare import prepare as prepare_job

    return prepare_job(_job(job))


def check(job: JobSpec | str | Path):
    """What a job would search, without running or writing anything: its model, data, space, the
    share of the space its budget allows, memory estimates and baselines; a ``JobCheck``
    (``autopeft check``)."""
    from autopeft.run.check import check_job

    return check_job(prepare(job))


def submit(job: JobSpec | str | Path, progress: bool = True, prepared=None):
    """Validate and run (or resume) a search; returns a ``SearchSummary``.

    ``prepared`` is ``prepare(job)``'s result, when the caller has it already.
    """
    from autopeft.run.loop import run_search

    spec = _job(job)
    return run_search(spec, progress=progress, prepared=prepared or prepare(spec))


def read_front(job: JobSpec | str | Path) -> tuple[list[Point], Reference]:
    """The current Pareto front of a job's search and its hypervolume reference point."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.load(_job(job)) as record:
        return pareto_front(record.finished_points(), record.reference.quality), record.reference


def count_scored(job: JobSpec | str | Path) -> int:
    """How many of a job's trials were trained to the end and scored, above the quality floor or not."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.load(_job(job)) as record:
        return len(record.finished_points())


def read_final(job: JobSpec | str | Path, every_point: bool = False) -> tuple[list[Point], dict[str, Point]]:
    """The front re-evaluated over seeds (mean quality and std per point) and the re-evaluated baselines;
    empty when the job re-evaluates nothing or its re-evaluation has not run. With ``every_point``, every
    re-evaluated trial in place of their front: those the means moved off it too."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.load(_job(job)) as record:
        trials, baselines = record.final_points()
        return (trials if every_point else pareto_front(trials, record.reference.quality)), baselines


def read_baselines(job: JobSpec | str | Path) -> dict[str, Point]:
    """The named baselines that have finished in a job's search, by name."""
    from autopeft.record.study import StudyRecord

    with StudyRecord.load(_job(job)) as record:
        return record.baseline_points()


def read_failed_baselines(job: JobSpec | str | Path) -> dict[str, str]:
    """The job's named baselines whose last training failed, by name: what made it fail, in one line."""
    from autopeft.record.study import StudyRecord

    job = _job(job)
    with StudyRecord.load(job) as record:
        return record.failed_baselines(job.baselines)


def export(job: JobSpec | str | Path, pick: str = "knee", out: str | Path = "adapter"):
    """Write the picked Pareto point as a peft adapter folder; returns an ``Exported``."""
    from autopeft.exporting import export_point

    return export_point(_job(job), pick, out)
