"""Plain data types shared by the driver and the workers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from .plan import Plan

Metric = Literal["accuracy", "f1", "mcc", "exact_match", "token_accuracy"]
TaskType = Literal["classification", "generation"]
METRICS: dict[str, tuple[str, ...]] = {  # by task type; the first is the default
    "classification": ("accuracy", "f1", "mcc"),
    "generation": ("exact_match", "token_accuracy"),
}


class Strict(BaseModel):
    """A pydantic model that refuses unknown fields: the base of every user-written document."""

    model_config = ConfigDict(extra="forbid")


class TrialOutcomeError(ValueError):
    """A trial function returned something that is not a result: ``reason`` names what, for the record."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)

    def __reduce__(self):
        return type(self), (self.reason, str(self))


class SpaceError(ValueError):
    """A space file asks for something the model cannot take; ``field`` is its path in the file."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}")


class Fidelity(Strict):
    """How hard one trial trains: the same for every trial of a search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_examples: int = Field(2000, ge=8, description="training examples drawn from the train split")
    eval_examples: int = Field(1000, ge=8, description="validation examples scored per trial")
    epochs: float = Field(1.0, gt=0)
    max_seq_length: int = Field(64, ge=8, le=4096)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0, le=1.0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory, slower")
    base_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 keeps the frozen base's linear layers in bf16 (about half its weights' memory) "
        "and runs the passes in bf16 autocast; its embeddings, norms and what trains stay float32")
    schedule: Literal["full", "asha"] = Field(
        "full", description="full: every trial trains all its steps; asha: trials train in rungs and only the best go on")
    rungs: tuple[float, ...] = Field((1 / 3, 1.0), min_length=2, max_length=8,
                                     description="asha: the fractions of the training steps after which a trial is scored")
    reduction_factor: int = Field(3, ge=2, le=16, description="asha: the top 1/reduction_factor of a rung go on to the next")
    brackets: int = Field(1, ge=1, le=8, description="asha: 1 ranks every trial from the first rung on; n spreads new trials over "
                          "n brackets, as Hyperband does: a trial of bracket b trains past the first b rungs unranked")

    @field_validator("rungs")
    @classmethod
    def _increasing_to_one(cls, rungs: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < r <= 1 for r in rungs) or list(rungs) != sorted(set(rungs)) or rungs[-1] != 1:
            raise ValueError(f"{list(rungs)} are not increasing fractions of the training that end at 1 (for example [0.111, 0.333, 1])")
        return rungs

    @model_validator(mode="after")
    def _brackets_within_rungs(self) -> Fidelity:
        if self.brackets > len(self.rungs):
            raise ValueError(f"brackets {self.brackets} is more than the {len(self.rungs)} rungs: a bracket is the rung from "
                             f"which its trials are ranked; give brackets between 1 and {len(self.rungs)}")
        return self

    @property
    def asha(self) -> bool:
        return self.schedule == "asha"

    def examples(self, available: int) -> int:
        """Training examples one trial draws from a train split of ``available``."""
        return min(self.train_examples, available)

    def steps_per_epoch(self, available: int) -> int:
        return math.ceil(self.examples(available) / self.batch_size)

    def steps(self, available: int) -> int:
        """Optimizer steps of one whole training on a train split of ``available`` examples
        (``train_examples`` of them at most, ``epochs`` passes in batches of ``batch_size``)."""
        return max(1, math.ceil(self.steps_per_epoch(available) * self.epochs))

LayerSizes = tuple[tuple[int, int], ...]
"""(layer index, size) pairs with size > 0: a module's size in each layer that has it."""


def layers_text(layers) -> str:
    """``0-3,5`` for layers 0, 1, 2, 3 and 5."""
    layers = sorted(layers)
    runs, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            runs.append(str(start) if start == layer else f"{start}-{layer}")
            start = None
    return ",".join(runs)


def sizes_text(name: str, sizes: LayerSizes) -> str:
    """``serial 64 @0-5``: a module's size(s) and the layers that have it."""
    distinct = sorted({s for _, s in sizes})
    size = str(distinct[0]) if len(distinct) == 1 else "/".join(map(str, distinct))
    return f"{name} {size} @{layers_text(l for l, _ in sizes)}"


@dataclass(frozen=True)
class TaskData:
    """Tokenisable examples.

    Classification: one or two text columns and integer labels. Generation (no labels): each
    example is (prompt, completion); with ``chat`` the prompt is the JSON of the chat messages
    before the completion, rendered with the tokenizer's chat template.
    """

    train_texts: tuple[tuple[str, ...], ...]
    train_labels: tuple[int, ...]
    validation_texts: tuple[tuple[str, ...], ...]
    validation_labels: tuple[int, ...]
    label_names: tuple[str, ...]
    kind: TaskType = "classification"
    chat: bool = False
    test_texts: tuple[tuple[str, ...], ...] = ()  # held out from the search: scored by the re-evaluation only
    test_labels: tuple[int, ...] = ()

    @property
    def num_labels(self) -> int:
        """Classes of the classification head; 0 for generation (a causal LM, no head)."""
        return len(self.label_names)

    @property
    def num_validation(self) -> int:
        return len(self.validation_texts)

    def num_scored(self, fidelity: Fidelity) -> int:
        """The validation examples a trial at ``fidelity`` is scored on: the first ``eval_examples`` of them."""
        return min(fidelity.eval_examples, self.num_validation)

    def test_as_validation(self) -> TaskData:
        """The same task with the test examples in the validation split's place, for the evaluation to score."""
        return replace(self, validation_texts=self.test_texts, validation_labels=self.test_labels)


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs to run one trial (the data travels separately).

    ``trial_number`` is the study's trial number; a named baseline has ``baseline`` set instead.
    """

    trial_number: int | None
    plan: Plan
    model: str
    num_labels: int
    metric: Metric
    fidelity: Fidelity
    seed: int
    trainer: str | None = None
    save_adapter: bool = True
    baseline: str | None = None
    zero_shot: bool = False  # score the base model as it is: no plan, no training
    stop_at: float = 1.0  # the fraction of the fidelity's training steps to train up to (a rung)
    resume: bytes | None = None  # the checkpoint of an earlier rung to continue from
    score_test: bool = False  # also score the trained model on the test split (the re-evaluation of the final front)

    @property
    def final_rung(self) -> bool:
        return self.stop_at >= 1.0

    @property
    def label(self) -> str:
        return f"baseline {self.baseline}" if self.baseline is not None else f"trial {self.trial_number}"


@dataclass(frozen=True)
class TrialResult:
    """What a worker reports back for one trial (its trainable count is the plan's: the worker checks it)."""

    quality: float
    metrics: dict[str, float]
    train_seconds: float
    peak_memory_mb: float
    device: str
    adapter_files: dict[str, bytes] = field(default_factory=dict)
    node: str = ""  # the machine it ran on: its host name, and its Ray node where it ran in Ray
    checkpoint: bytes | None = None  # a rung before the last: what the next rung continues from
    test_quality: float | None = None  # the task metric on the test split, where the request asked for it
