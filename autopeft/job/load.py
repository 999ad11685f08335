"""Reading a job file (or a built-in job) into a ``JobSpec``; YAML reading for every user file."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from autopeft.errors import UserError, from_validation_error
from autopeft.job.spec import JobSpec

BUILTIN_JOBS = ("demo", "demo-decoder")


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: YAML would keep
    the last one silently, and a job would run without the settings of the first."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:  # the mapping's own keys: a merged ``<<`` key may be overridden
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise _DuplicateKey(None, None, f"key '{key}' is given twice", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str, source: str) -> object:
    """Parse YAML ``text``; a syntax error or a key given twice becomes a ``UserError`` naming ``source`` and the line."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = re.sub(r"\s+", " ", str(getattr(exc, "problem", None) or exc))
        if isinstance(exc, _DuplicateKey):
            raise UserError(source, f"{problem}{where}", "keep one of its entries (merge their settings)") from None
        raise UserError(source, f"YAML syntax error{where}: {problem}", "fix the YAML syntax there") from None


def _resolve_paths(job: JobSpec, base: Path) -> JobSpec:
    """Make the job's relative file paths relative to the job file's folder."""

    def rel(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else (base / p)

    task = job.task.model_copy(
        update={
            "train_file": rel(job.task.train_file) or job.task.train_file,
            "validation_file": rel(job.task.validation_file) or job.task.validation_file,
            "test_file": rel(job.task.test_file) or job.task.test_file,
        }
    )
    stores = job.stores.model_copy(update={"run_dir": rel(job.stores.run_dir) or job.stores.run_dir})
    optimizer = job.optimizer.model_copy(update={"warm_start": rel(job.optimizer.warm_start) or job.optimizer.warm_start})
    space = job.search_space
    if space.endswith((".yaml", ".yml")) and not Path(space).is_absolute():
        space = str(base / space)
    model = job.model
    if not Path(model).is_absolute() and (model.startswith(".") or (base / model).is_dir()):
        model = str(base / model)
    return job.model_copy(update={"task": task, "stores": stores, "optimizer": optimizer, "search_space": space,
                                  "model": model})


def parse_job(data: object, source: str = "job", base: Path | None = None) -> JobSpec:
    if not isinstance(data, dict):
        raise UserError(source, "the job file must be a YAML mapping (key: value lines)", "see the README's job file example")
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source, JobSpec) from None
    return _resolve_paths(job, base or Path.cwd())


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file, or the built-in job of that name (``demo``, ``demo-decoder``)."""
    if str(path) in BUILTIN_JOBS:
        source = f"built-in job '{path}'"
        text = resources.files("autopeft.job").joinpath(f"{path}.yaml").read_text()
        return parse_job(read_yaml(text, source), source, Path.cwd())
    path = Path(path)
    if not path.is_file():
        problem = ("job file does not exist" if not path.exists() else
                   "is a folder, not a job file" if path.is_dir() else "is not a regular file")
        raise UserError(str(path), problem, f"give the path of a job YAML file (or one of {', '.join(BUILTIN_JOBS)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(str(path), "the job file is not UTF-8 text", "save it as UTF-8") from None
    return parse_job(read_yaml(text, str(path)), str(path), path.parent)
