"""What every benchmark does with its report (print it and keep it in ``benchmarks/out/<name>.md``) and with
the changed copies of job files it runs."""

from __future__ import annotations

from pathlib import Path

import yaml

OUT = Path(__file__).parent / "out"


def publish(lines: list[str], name: str) -> Path:
    """Print the report's ``lines`` and write them to ``benchmarks/out/<name>.md``; that file's path."""
    text = "\n".join(lines)
    print(text)
    out = OUT / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out


def job_data(job_path: Path) -> dict:
    """The job file's YAML with every path the loader reads relative to the file's folder (a model folder, the
    search space file, the task's data files, the run directory, a warm start) made absolute, so that a changed
    copy of it, written anywhere, runs the same job."""
    from autopeft.job.load import load_job

    data = yaml.safe_load(job_path.read_text())
    job = load_job(job_path)
    if job.model != data["model"]:
        data["model"] = str(Path(job.model).resolve())
    if job.search_space != data.get("search_space", job.search_space):
        data["search_space"] = str(Path(job.search_space).resolve())
    for section, obj, keys in (("task", job.task, ("train_file", "validation_file", "test_file")),
                               ("stores", job.stores, ("run_dir",)), ("optimizer", job.optimizer, ("warm_start",))):
        for key in keys:
            if data.get(section, {}).get(key) is not None:
                data[section][key] = str(Path(getattr(obj, key)).resolve())
    return data


def write_job(data: dict, folder: Path = OUT / "jobs") -> Path:
    """``data`` (from ``job_data``, changed) written as ``folder/<its name>.yaml``; that file's path."""
    path = folder / f"{data['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
