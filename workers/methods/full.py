"""Full fine-tuning: every weight trains. Not searched; the reference baseline every plan is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Method, register_method


@dataclass(frozen=True)
class Full:
    method: ClassVar[str] = "full"


class FullMethod(Method):
    name = "full"
    title = "full fine-tuning"
    part = Full
    order = 90
    learning_rate_scale = 0.05  # every weight moves: 1e-4 at the default 2e-3, a BERT fine-tuning rate
    baselines = {"full": lambda s: (Full(),)}

    def count(self, part: Full, shape) -> int:
        return shape.base_params

    def describe(self, part: Full) -> str:
        return "full fine-tuning"

    def from_legacy(self, data) -> Full | None:
        return Full() if data.get("full") else None


register_method(FullMethod())
