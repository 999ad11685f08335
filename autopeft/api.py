"""The Python API: everything the CLI does, as function calls."""

from __future__ import annotations

from pathlib import Path

from autopeft.job import JobSpec, load_job
from autopeft.pareto import Point, Reference, pareto_front


def _job(job: JobSpec | str | Path) -> JobSpec:
    return job if isinstance(job, JobSpec) else load_job(job)


def submit(job: JobSpec | str | Path, progress: bool = True):
    """Validate and run (or resume) a search; returns a ``SearchSummary``."""
    from autopeft.search import prepare, run_search

    spec = _job(job)
    return run_search(spec, progress=progress, prepared=prepare(spec))


def read_front(job: JobSpec | str | Path) -> tuple[list[Point], Reference]:
    """The current Pareto front of a job's search and its hypervolume reference point."""
    from autopeft.search import finished_points, load_existing_study, study_reference

    study = load_existing_study(_job(job))
    return pareto_front(finished_points(study)), study_reference(study)


def read_baselines(job: JobSpec | str | Path) -> dict[str, Point]:
    """The named baselines that have finished in a job's search, by name."""
    from autopeft.search import baseline_points, load_existing_study

    return baseline_points(load_existing_study(_job(job)).user_attrs.get("baselines", {}))


def export(job: JobSpec | str | Path, pick: str = "knee", out: str | Path = "adapter"):
    """Write the picked Pareto point as a peft adapter folder; returns an ``Exported``."""
    from autopeft.export import export_point

    return export_point(_job(job), pick, out)
