"""A Plan: which PEFT methods, where and how large; one part per method, stored as plain JSON."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .methods.base import METHODS, method, ordered


@dataclass(frozen=True)
class Plan:
    """What to train: one part per PEFT method (a method's ``part`` dataclass), in plan order.

    Build one with ``Plan.of(part, ...)``; a ``None`` part (nothing trains) is left out.
    ``learning_rate`` overrides the job's fidelity for this plan; ``learning_rate_scales`` overrides
    methods' own scales of it (method name -> scale). With ``pooler`` the model's pooler (a BERT's
    dense layer on the first token, between the encoder and the classifier) trains with the head;
    with ``pooler_rank`` instead, a LoRA of that rank (alpha twice the rank) on its linear layers.
    """

    parts: tuple = ()
    learning_rate: float | None = None
    learning_rate_scales: tuple[tuple[str, float], ...] = ()
    pooler: bool = False
    pooler_rank: int = 0

    def __post_init__(self):
        by_name = {type(p).method: p for p in self.parts if p is not None}
        object.__setattr__(self, "parts", tuple(by_name[n] for n in ordered(by_name)))

    @classmethod
    def of(cls, *parts, learning_rate: float | None = None, learning_rate_scales: dict[str, float] | None = None,
           pooler: bool = False, pooler_rank: int = 0) -> Plan:
        parts = tuple(p for p in parts if p is not None)
        present = {type(p).method for p in parts}
        scales = tuple(sorted((n, float(s)) for n, s in (learning_rate_scales or {}).items() if n in present))
        pooler = bool(pooler) and "full" not in present
        return cls(parts=parts, learning_rate=learning_rate, learning_rate_scales=scales, pooler=pooler,
                   pooler_rank=0 if pooler or "full" in present or not parts else int(pooler_rank))

    def learning_rate_scale(self, name: str) -> float:
        """The multiple of the plan's learning rate that method ``name`` trains at."""
        return dict(self.learning_rate_scales).get(name, method(name).learning_rate_scale)

    def as_trained(self, learning_rate: float) -> Plan:
        """This plan with its rates spelled out, given the job's ``learning_rate``: a plan that trains at the job's
        rate and each method's own scale then reads as one that names those rates."""
        scales = {n: self.learning_rate_scale(n) for n in self.methods}
        return replace(self, learning_rate=float(self.learning_rate or learning_rate),
                       learning_rate_scales=tuple(sorted(scales.items())))

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this plan uses, in the order they are applied."""
        return tuple(type(p).method for p in self.parts)

    def __contains__(self, name: str) -> bool:
        return name in self.methods

    def __getitem__(self, name: str):
        for part in self.parts:
            if type(part).method == name:
                return part
        raise KeyError(f"the plan has no '{name}' part")

    @property
    def full(self) -> bool:
        return "full" in self.methods

    @property
    def is_empty(self) -> bool:
        return not self.parts

    def describe(self) -> str:
        """A short human-readable summary, e.g. ``query:r8 value:r8 @ layers 0-2``, and the plan's
        own learning rate where it has one (``... lr 0.006``); ``+ pooler`` when the pooler trains,
        ``+ pooler:r8`` for a LoRA on it."""
        text = " | ".join(method(type(p).method).describe(p) for p in self.parts) or "no adapter"
        text += " + pooler" if self.pooler else f" + pooler:r{self.pooler_rank}" if self.pooler_rank else ""
        return text if self.learning_rate is None else f"{text} lr {self.learning_rate:g}"

    def to_dict(self) -> dict[str, Any]:
        data = {"modules": {type(p).method: method(type(p).method).to_dict(p) for p in self.parts},
                "learning_rate": self.learning_rate}
        if self.learning_rate_scales:
            data["learning_rate_scales"] = dict(self.learning_rate_scales)
        if self.pooler:
            data["pooler"] = True
        if self.pooler_rank:
            data["pooler_rank"] = self.pooler_rank
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Read ``to_dict``'s form, or the flat form autopeft 0.1 stored on its trials."""
        if "modules" not in data:
            parts = [m.from_legacy(data) for m in METHODS.values()]
        else:
            unknown = set(data["modules"]) - set(METHODS)
            if unknown:
                raise ValueError(f"the plan uses unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
            parts = [method(n).from_dict(fields) for n, fields in data["modules"].items()]
        return cls.of(*parts, learning_rate=data.get("learning_rate"), learning_rate_scales=data.get("learning_rate_scales"),
                      pooler=bool(data.get("pooler", False)), pooler_rank=int(data.get("pooler_rank", 0)))
