"""LN tuning (Qi et al., 2022; peft's ``LN_TUNING``): the layers' normalisation modules train (their
scale, and their bias where they have one), in the layers chosen. Which modules are norms is read
from the model (every module of a layer whose class name ends in ``Norm``: LayerNorm, RMSNorm,
Qwen3's query and key norms), so every family has them; a model whose norms have no weights (OLMo's
LayerNorm) has nothing to tune, and LN tuning is refused for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from ..types import SpaceError, Strict, layers_text
from .base import Method, register_method


@dataclass(frozen=True)
class LnTuning:
    method: ClassVar[str] = "ln_tuning"
    layers: tuple[int, ...]


class LnTuningSpace(Strict):
    optional: bool = True  # true: an on/off dimension; false: always on


class LnTuningMethod(Method):
    name = "ln_tuning"
    title = "LN tuning"
    part = LnTuning
    space = LnTuningSpace
    order = 30  # before bottleneck adapters wrap the blocks that hold the norms
    peft_type = "LN_TUNING"
    parameter_prefix = "ln_tuning_"
    learning_rate_scale = 10.0  # only scales and shifts train, as with IA3 and VeRA
    baselines = {"ln-tuning": lambda s: (LnTuning(tuple(range(s.num_layers)) if s.norms else ()),)}

    def check(self, spec: LnTuningSpace, shape, alone: bool) -> None:
        if not shape.norms:
            raise SpaceError("modules.ln_tuning", f"the normalisation modules of {shape.model_type} models have no "
                             "weights to train", "search other methods for this model")

    def fits(self, family, part=None) -> bool:
        return super().fits(family, part) and (part is None or bool(part.layers))

    def dimensions(self, spec: LnTuningSpace, shape) -> list[tuple[str, tuple]]:
        return [("ln_tuning", (0, 1) if spec.optional else (1,))]

    def decode(self, spec: LnTuningSpace, value, layers, shape) -> LnTuning | None:
        return LnTuning(layers) if value.get("ln_tuning", 1) and layers else None

    def smallest(self, spec: LnTuningSpace, shape, layers) -> LnTuning:
        return LnTuning(layers)

    def count(self, part: LnTuning, shape) -> int:
        return sum(shape.norms.values()) * len(part.layers)

    def layers(self, part: LnTuning, shape) -> set[int]:
        return set(part.layers)

    def peft_kwargs(self, part: LnTuning, shape) -> dict:
        layers = "|".join(map(str, part.layers))
        norms = "|".join(re.escape(path) for path in shape.norms)
        return {"target_modules": rf"(?:.*\.)?{re.escape(shape.family.layers_path)}\.(?:{layers})\.(?:{norms})"}

    def describe(self, part: LnTuning) -> str:
        return f"ln_tuning @{layers_text(part.layers)}"


register_method(LnTuningMethod())
