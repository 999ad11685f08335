"""Plain data types shared by the driver and the workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["accuracy", "f1", "mcc"]


class Fidelity(BaseModel):
    """How hard one trial trains: the same for every trial of a search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_examples: int = Field(2000, ge=8, description="training examples drawn from the train split")
    eval_examples: int = Field(1000, ge=8, description="validation examples scored per trial")
    epochs: float = Field(1.0, gt=0)
    max_seq_length: int = Field(64, ge=8, le=4096)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0, le=1.0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)


@dataclass(frozen=True)
class LoraTarget:
    """LoRA on one module group (e.g. all query projections) in some layers."""

    group: str
    rank: int
    alpha: float
    layers: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """What to train: which PEFT modules, where, and how large."""

    lora: tuple[LoraTarget, ...] = ()
    learning_rate: float | None = None

    @property
    def is_empty(self) -> bool:
        return not any(t.rank > 0 and t.layers for t in self.lora)

    def active_lora(self) -> tuple[LoraTarget, ...]:
        return tuple(t for t in self.lora if t.rank > 0 and t.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lora": [{**asdict(t), "layers": list(t.layers)} for t in self.lora],
            "learning_rate": self.learning_rate,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        lora = tuple(
            LoraTarget(group=t["group"], rank=int(t["rank"]), alpha=float(t["alpha"]), layers=tuple(t["layers"]))
            for t in data.get("lora", [])
        )
        return cls(lora=lora, learning_rate=data.get("learning_rate"))

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``query:r8 value:r8 @ layers 0,1,2``."""
        active = self.active_lora()
        if not active:
            return "no adapter"
        parts = [f"{t.group}:r{t.rank}" for t in active]
        layer_sets = {t.layers for t in active}
        if len(layer_sets) == 1:
            return " ".join(parts) + " @ layers " + ",".join(map(str, next(iter(layer_sets))))
        return " ".join(f"{t.group}:r{t.rank}@{','.join(map(str, t.layers))}" for t in active)


@dataclass(frozen=True)
class TaskData:
    """Tokenisable examples: one or two text columns and integer labels."""

    train_texts: tuple[tuple[str, ...], ...]
    train_labels: tuple[int, ...]
    validation_texts: tuple[tuple[str, ...], ...]
    validation_labels: tuple[int, ...]
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class TrialRequest:
    """Everything a worker needs to run one trial (the data travels separately)."""

    trial_number: int
    plan: Plan
    model: str
    num_labels: int
    metric: Metric
    fidelity: Fidelity
    seed: int
    trainer: str | None = None
    save_adapter: bool = True


@dataclass(frozen=True)
class TrialResult:
    """What a worker reports back for one trial."""

    trial_number: int
    quality: float
    metrics: dict[str, float]
    trainable_params: int
    trainable_pct: float
    train_seconds: float
    peak_memory_mb: float
    device: str
    adapter_files: dict[str, bytes] = field(default_factory=dict)
