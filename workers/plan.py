"""A Plan in peft terms: its exact parameter count and the peft config that builds it."""

from __future__ import annotations

import re

from workers.models import ModelShape
from workers.types import Plan


def count_trainable(plan: Plan, shape: ModelShape) -> int:
    """Exact number of parameters peft will train for ``plan``: adapters plus the classification head."""
    total = shape.head_params
    for target in plan.active_lora():
        fan_in, fan_out = shape.group_dims[target.group]
        total += target.rank * (fan_in + fan_out) * len(target.layers)
    return total


def trainable_pct(params: int, shape: ModelShape) -> float:
    return 100.0 * params / shape.base_params


def _group_pattern(shape: ModelShape, group: str, layers: tuple[int, ...] | None = None) -> str:
    arch = shape.architecture
    layer = r"\d+" if layers is None else "(?:" + "|".join(str(i) for i in layers) + ")"
    return rf"{re.escape(arch.layers_path)}\.{layer}\.{re.escape(arch.groups[group])}"


def lora_config(plan: Plan, shape: ModelShape, base_model_name_or_path: str | None = None):
    """The plain ``peft.LoraConfig`` for a pure-LoRA plan.

    ``target_modules`` is one regular expression naming exactly the (layer, module) pairs of the
    plan; ``rank_pattern`` and ``alpha_pattern`` give each module group its own rank and alpha.
    """
    from peft import LoraConfig, TaskType

    active = plan.active_lora()
    if not active:
        raise ValueError("the plan has no adapter module")
    alternatives = [_group_pattern(shape, t.group, t.layers) for t in active]
    first = active[0]
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        base_model_name_or_path=base_model_name_or_path,
        target_modules=r".*\.(?:" + "|".join(alternatives) + ")",
        r=first.rank,
        lora_alpha=first.alpha,
        rank_pattern={_group_pattern(shape, t.group): t.rank for t in active},
        alpha_pattern={_group_pattern(shape, t.group): t.alpha for t in active},
        lora_dropout=0.0,
    )


def apply_plan(model, plan: Plan, shape: ModelShape):
    """Wrap ``model`` with peft according to ``plan``; only the adapters and the head stay trainable."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(plan, shape, getattr(model, "name_or_path", None)))
