"""The job file's schema: typed, strict (an unknown field is an error), with defaults for everything but the model and the task."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from autopeft.job.secrets import mask_uri
from autopeft.optimize.registry import SAMPLERS
from autopeft.record.layout import RunLayout
from autopeft.workers.types import METRICS, Fidelity, Metric, Strict, TaskType


def one_or_more(value):
    """A list field given one name (``text_columns: review``, ``baselines: lora-r8``) holds that one name."""
    return [value] if isinstance(value, str) else value


class TaskSpec(Strict):
    type: TaskType = "classification"
    dataset: Literal["rotten_tomatoes"] | None = None
    train_file: Path | None = None
    validation_file: Path | None = None
    test_file: Path | None = Field(None, description="held-out examples, never seen by the search: each re-evaluated "
                                   "point is scored on all of them (needs final.seeds)")
    text_columns: list[str] = Field(default_factory=lambda: ["text"], min_length=1, max_length=2)
    label_column: str = "label"
    prompt_column: str | list[str] = Field("prompt", min_length=1, description="generation: the instruction; its "
                                           "completion follows it. Several columns (Alpaca's [instruction, input]) make "
                                           "one prompt, their texts a blank line apart, empty ones left out")
    completion_column: str = "completion"
    messages_column: str = Field("messages", description="generation: chat messages, rendered with the chat template")
    metric: Metric | None = Field(None, description="default: accuracy for classification, exact_match for generation")
    validation_size: float = Field(0.2, gt=0, allow_inf_nan=False)
    test_size: float | None = Field(None, gt=0, allow_inf_nan=False, description="without a test file: a fraction or a "
                                    "count of the training data held out as test examples, before the validation split")
    split_seed: int = 0

    _one_text_column = field_validator("text_columns", mode="before")(one_or_more)

    @field_validator("validation_size", "test_size")
    @classmethod
    def _fraction_or_count(cls, value: float | None) -> float | None:
        if value is not None and value >= 1 and value != int(value):
            raise ValueError(f"{value} is neither a fraction below 1 nor a whole number of examples")
        return value

    @model_validator(mode="after")
    def _one_test_source(self) -> TaskSpec:
        if self.test_file is not None and self.test_size is not None:
            raise ValueError("give at most one of 'test_file' (held-out examples of their own) or 'test_size' (examples "
                             "held out of the training data)")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> TaskSpec:
        if (self.dataset is None) == (self.train_file is None):
            raise ValueError("give exactly one of 'dataset' (built-in: rotten_tomatoes) or 'train_file'")
        return self

    @model_validator(mode="after")
    def _metric_of_the_task(self) -> TaskSpec:
        allowed = METRICS[self.type]
        if self.metric is None:
            self.metric = allowed[0]
        elif self.metric not in allowed:
            raise ValueError(f"metric '{self.metric}' does not fit a {self.type} task; use one of {', '.join(allowed)}")
        return self


class ObjectivesSpec(Strict):
    quality_floor: float | None = Field(
        None, allow_inf_nan=False, description="hypervolume reference on quality; default: the score of always predicting the majority label"
    )
    params_ceiling_pct: float | None = Field(
        None, gt=0, description="hypervolume reference on trainable %; default: the budget, else the largest plan"
    )


class OptimizerSpec(Strict):
    sampler: str = "autopeft"
    n_startup_trials: int = Field(10, ge=1, description="quasi-random points before the model-based sampler takes over")
    warm_start: Path | None = Field(None, description="an earlier search (its job file or run directory): the points on its "
                                    "front, mapped onto this space and model depth, open the initial design")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler '{name}'; use one of " + ", ".join(f"'{n}'" for n in SAMPLERS))
        return name


class ResourcesSpec(Strict):
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)


class BudgetSpec(Strict):
    trials: int = Field(20, ge=0, le=100_000, strict=True)
    parallel: int = Field(1, ge=1, le=4096, strict=True)
    max_trainable_pct: float | None = Field(None, gt=0, le=100)
    max_trainable_params: int | None = Field(None, gt=0)
    max_memory_gb: float | None = Field(None, gt=0, description="estimated peak training memory per trial, GiB")
    trial_timeout: float | None = Field(
        None, gt=0, description="seconds a trial may run, from when its worker is up, before the worker is stopped; "
        "default: ten times the slowest finished trial, at least 15 minutes (no limit until one has finished)")
    max_retries: int = Field(2, ge=0, le=100, strict=True, description="re-runs of a trial whose worker process was lost")


class FinalSpec(Strict):
    """Re-evaluation of the final front: each Pareto point and baseline trained again with new seeds."""

    seeds: int = Field(0, ge=0, le=20, strict=True, description="new seeds per point after the search; 0: no re-evaluation")
    epochs: float | None = Field(None, gt=0, description="epochs of each re-training; default: the fidelity's")
    fronts: int = Field(1, ge=1, le=10, strict=True, description="non-dominated fronts of the search whose points are "
                        "re-evaluated: 1, the Pareto front; 2, also the front of the trials it dominates; and so on")


class StoresSpec(Strict):
    """Where a search keeps its records; URIs may name environment variables, as ``${DB_PASSWORD}``."""

    run_dir: Path | None = None
    mlflow_uri: str | None = None
    optuna_storage: str | None = None
    ray_address: str | None = None

    @field_validator("mlflow_uri", "optuna_storage", "ray_address")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        if value is None:
            return value
        missing = [name for name in re.findall(r"\$\{(\w+)\}", value) if name not in os.environ]
        if missing:
            raise ValueError(f"environment variable {missing[0]} is not set; set it, or write the value in the job file")
        return re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], value)


FLOORS = {"majority": "always the majority label", "given": "objectives.quality_floor",
          "zero-shot": "the base model's zero-shot score"}


class JobSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    model: str
    task: TaskSpec
    search_space: str = "lora"
    objectives: ObjectivesSpec = Field(default_factory=ObjectivesSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    fidelity: Fidelity = Field(default_factory=Fidelity)
    final: FinalSpec = Field(default_factory=FinalSpec)
    stores: StoresSpec = Field(default_factory=StoresSpec)
    trainer: str | None = Field(None, pattern=r"^[\w.]+:\w+$")
    baselines: list[str] = Field(default_factory=list, description="named baselines run first, shown beside the search")
    seed: int = 0

    _one_baseline = field_validator("baselines", mode="before")(one_or_more)

    @model_validator(mode="after")
    def _something_to_run(self) -> JobSpec:
        if self.budget.trials == 0 and not self.baselines:
            raise ValueError("budget.trials is 0 and no baselines are named: nothing would run; "
                             "set budget.trials to 1 or more, or name baselines")
        return self

    @model_validator(mode="after")
    def _rungs_with_the_built_in_trainer(self) -> JobSpec:
        if self.fidelity.asha and self.trainer is not None:
            raise ValueError("fidelity.schedule asha trains trials in rungs from checkpoints, which only the built-in "
                             "trainer does; remove 'trainer' or set fidelity.schedule to full")
        return self

    @model_validator(mode="after")
    def _test_examples_are_scored_by_the_re_evaluation(self) -> JobSpec:
        field = "test_file" if self.task.test_file is not None else "test_size" if self.task.test_size is not None else None
        if field is not None and self.final.seeds == 0:
            raise ValueError(f"task.{field} is scored by the re-evaluation of the final front, and final.seeds is 0: "
                             f"nothing would score it; set final.seeds (3, for example) or remove task.{field}")
        return self

    @property
    def final_fidelity(self) -> Fidelity:
        """The fidelity the final front is re-trained at."""
        if self.final.epochs is None:
            return self.fidelity
        return self.fidelity.model_copy(update={"epochs": self.final.epochs})

    @property
    def floor_kind(self) -> str:
        """What the quality floor is: ``given`` in the job, the base model's ``zero-shot`` score (generation), or
        the ``majority`` label's score (classification); ``FLOORS`` says each in words."""
        if self.objectives.quality_floor is not None:
            return "given"
        return "zero-shot" if self.task.type == "generation" else "majority"

    @property
    def run_dir(self) -> Path:
        return self.stores.run_dir if self.stores.run_dir is not None else Path("autopeft_runs") / self.name

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    def public_dict(self) -> dict:
        """The job as stored and logged: store URIs with their credentials masked."""
        data = self.model_dump(mode="json")
        for key in ("mlflow_uri", "optuna_storage", "ray_address"):
            data["stores"][key] = mask_uri(data["stores"][key])
        return data

    @property
    def mlflow_uri(self) -> str:
        return self.stores.mlflow_uri or self.layout.mlflow_uri

    @property
    def optuna_storage(self) -> str:
        return self.stores.optuna_storage or self.layout.optuna_storage
