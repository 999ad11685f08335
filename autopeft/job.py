"""The job file: a YAML document validated into typed objects."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from autopeft.errors import UserError, from_validation_error
from workers.types import Fidelity, Metric

BUILTIN_JOBS = ("demo",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    dataset: Literal["rotten_tomatoes"] | None = None
    train_file: Path | None = None
    validation_file: Path | None = None
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1, max_length=2)
    label_column: str = "label"
    metric: Metric = "accuracy"
    validation_size: float = Field(0.2, gt=0)
    split_seed: int = 0

    @model_validator(mode="after")
    def _one_source(self) -> TaskSpec:
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of 'dataset' (built-in: rotten_tomatoes) or 'train_file'")
        return self


class ObjectivesSpec(_Strict):
    quality_floor: float | None = Field(
        None, description="hypervolume reference on quality; default: the score of always predicting the majority label"
    )
    params_ceiling_pct: float | None = Field(
        None, gt=0, description="hypervolume reference on trainable %; default: the budget, else the largest plan"
    )


class OptimizerSpec(_Strict):
    sampler: Literal["autopeft", "gp", "random", "nsga2", "tpe"] = "autopeft"
    n_startup_trials: int = Field(10, ge=1, description="quasi-random points before the model-based sampler takes over")


class ResourcesSpec(_Strict):
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)


class BudgetSpec(_Strict):
    trials: int = Field(20, ge=0)
    parallel: int = Field(1, ge=1)
    max_trainable_pct: float | None = Field(None, gt=0, le=100)
    max_trainable_params: int | None = Field(None, gt=0)


class StoresSpec(_Strict):
    run_dir: Path | None = None
    mlflow_uri: str | None = None
    optuna_storage: str | None = None
    ray_address: str | None = None


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: str
    task: TaskSpec
    search_space: str = "lora"
    objectives: ObjectivesSpec = Field(default_factory=ObjectivesSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    fidelity: Fidelity = Field(default_factory=Fidelity)
    stores: StoresSpec = Field(default_factory=StoresSpec)
    trainer: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    baselines: list[str] = Field(default_factory=list, description="named baselines run first, shown beside the search")
    seed: int = 0

    @property
    def run_dir(self) -> Path:
        return self.stores.run_dir if self.stores.run_dir is not None else Path("autopeft_runs") / self.name

    @property
    def mlflow_uri(self) -> str:
        return self.stores.mlflow_uri or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"

    @property
    def optuna_storage(self) -> str:
        return self.stores.optuna_storage or f"sqlite:///{(self.run_dir / 'study.db').resolve()}"


def _resolve_paths(job: JobSpec, base: Path) -> JobSpec:
    """Make the job's relative file paths relative to the job file's folder."""

    def rel(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else (base / p)

    task = job.task.model_copy(
        update={
            "train_file": rel(job.task.train_file) or job.task.train_file,
            "validation_file": rel(job.task.validation_file) or job.task.validation_file,
        }
    )
    stores = job.stores.model_copy(update={"run_dir": rel(job.stores.run_dir) or job.stores.run_dir})
    space = job.search_space
    if space.endswith((".yaml", ".yml")) and not Path(space).is_absolute():
        space = str(base / space)
    model = job.model
    if not Path(model).is_absolute() and (model.startswith(".") or (base / model).is_dir()):
        model = str(base / model)
    return job.model_copy(update={"task": task, "stores": stores, "search_space": space, "model": model})


def parse_job(data: object, source: str = "job", base: Path | None = None) -> JobSpec:
    if not isinstance(data, dict):
        raise UserError(source, "the job file must be a YAML mapping (key: value lines)", "see the README's job file example")
    try:
        job = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, source, JobSpec) from None
    return _resolve_paths(job, base or Path.cwd())


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file, or the built-in job of that name (``demo``)."""
    if str(path) in BUILTIN_JOBS:
        text = resources.files("autopeft").joinpath("jobs", f"{path}.yaml").read_text()
        data = _load_yaml(text, f"built-in job '{path}'")
        job = parse_job(data, f"built-in job '{path}'", Path.cwd())
        return job
    path = Path(path)
    if not path.is_file():
        raise UserError(str(path), "job file does not exist", "give the path of a job YAML file (or 'demo')")
    data = _load_yaml(path.read_text(), str(path))
    return parse_job(data, str(path), path.parent)


def _load_yaml(text: str, source: str) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = re.sub(r"\s+", " ", str(getattr(exc, "problem", None) or exc))
        raise UserError(source, f"YAML syntax error{where}: {problem}", "fix the YAML syntax there") from None
