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


LayerSizes = tuple[tuple[int, int], ...]
"""(layer index, size) pairs with size > 0: a module's size in each layer that has it."""

IA3_FEEDFORWARD_GROUPS = ("ffn_out",)


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


def _sizes_text(name: str, sizes: LayerSizes) -> str:
    distinct = sorted({s for _, s in sizes})
    size = str(distinct[0]) if len(distinct) == 1 else "/".join(map(str, distinct))
    return f"{name} {size} @{layers_text(l for l, _ in sizes)}"


@dataclass(frozen=True)
class Plan:
    """What to train: which PEFT modules, where, and how large.

    ``serial_ffn``, ``serial_attention``, ``parallel_ffn`` and ``prefix`` give a size per layer;
    ``full`` is full fine-tuning (the reference every PEFT plan is compared with).
    """

    lora: tuple[LoraTarget, ...] = ()
    ia3_groups: tuple[str, ...] = ()
    ia3_layers: tuple[int, ...] = ()
    serial_ffn: LayerSizes = ()
    serial_attention: LayerSizes = ()
    parallel_ffn: LayerSizes = ()
    parallel_scaling: float = 4.0
    prefix: LayerSizes = ()
    full: bool = False
    learning_rate: float | None = None

    def active_lora(self) -> tuple[LoraTarget, ...]:
        return tuple(t for t in self.lora if t.rank > 0 and t.layers)

    @property
    def methods(self) -> tuple[str, ...]:
        """The peft methods this plan uses, in the order they are applied."""
        if self.full:
            return ("full",)
        found = []
        if self.active_lora():
            found.append("lora")
        if self.ia3_groups and self.ia3_layers:
            found.append("ia3")
        if self.prefix:
            found.append("kv_prefix")
        if self.serial_ffn or self.serial_attention or self.parallel_ffn:
            found.append("bottleneck")
        return tuple(found)

    @property
    def is_empty(self) -> bool:
        return not self.methods

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"] = [{**asdict(t), "layers": list(t.layers)} for t in self.lora]
        for key in ("ia3_groups", "ia3_layers"):
            data[key] = list(data[key])
        for key in ("serial_ffn", "serial_attention", "parallel_ffn", "prefix"):
            data[key] = [list(pair) for pair in data[key]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        lora = tuple(
            LoraTarget(group=t["group"], rank=int(t["rank"]), alpha=float(t["alpha"]), layers=tuple(t["layers"]))
            for t in data.get("lora", [])
        )
        sizes = {k: tuple((int(a), int(b)) for a, b in data.get(k, [])) for k in ("serial_ffn", "serial_attention", "parallel_ffn", "prefix")}
        return cls(
            lora=lora,
            ia3_groups=tuple(data.get("ia3_groups", ())),
            ia3_layers=tuple(int(i) for i in data.get("ia3_layers", ())),
            parallel_scaling=float(data.get("parallel_scaling", 4.0)),
            full=bool(data.get("full", False)),
            learning_rate=data.get("learning_rate"),
            **sizes,
        )

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``query:r8 value:r8 @ layers 0,1,2``."""
        if self.full:
            return "full fine-tuning"
        parts = []
        active = self.active_lora()
        if active:
            layer_sets = {t.layers for t in active}
            if len(layer_sets) == 1:
                parts.append(" ".join(f"{t.group}:r{t.rank}" for t in active)
                             + " @ layers " + ",".join(map(str, next(iter(layer_sets)))))
            else:
                parts.append(" ".join(f"{t.group}:r{t.rank}@{layers_text(t.layers)}" for t in active))
        if "ia3" in self.methods:
            parts.append(f"ia3 {'+'.join(self.ia3_groups)} @{layers_text(self.ia3_layers)}")
        for name, sizes in (("prefix", self.prefix), ("serial", self.serial_ffn),
                            ("serial-attn", self.serial_attention), ("parallel", self.parallel_ffn)):
            if sizes:
                parts.append(_sizes_text(name, sizes))
        return " | ".join(parts) if parts else "no adapter"


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
