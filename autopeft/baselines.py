"""Named baselines: the PEFT configurations users pick by hand, as plans for any model shape.

Sizes follow the papers, scaled to the model width: Houlsby's adapters are width/12 (64 for
BERT-base), Pfeiffer's and the parallel adapter width/16, MAM's parallel adapter 2/3 of the
width (512 for BERT-base) next to a prefix of 30 (He et al., 2022). Full fine-tuning trains at
its own, smaller learning rate; every other baseline at the job's fidelity.
"""

from __future__ import annotations

from collections.abc import Callable

from autopeft.errors import UserError
from workers.models import ModelShape
from workers.types import LoraTarget, Plan


def _every(shape: ModelShape, size: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, max(1, size)) for i in range(shape.num_layers))


def _all_layers(shape: ModelShape) -> tuple[int, ...]:
    return tuple(range(shape.num_layers))


BASELINES: dict[str, Callable[[ModelShape], Plan]] = {
    "lora-r8": lambda s: Plan(lora=(LoraTarget("query", 8, 16.0, _all_layers(s)), LoraTarget("value", 8, 16.0, _all_layers(s)))),
    "houlsby": lambda s: Plan(serial_ffn=_every(s, s.hidden_size // 12), serial_attention=_every(s, s.hidden_size // 12)),
    "pfeiffer": lambda s: Plan(serial_ffn=_every(s, s.hidden_size // 16)),
    "parallel": lambda s: Plan(parallel_ffn=_every(s, s.hidden_size // 16)),
    "prefix-10": lambda s: Plan(prefix=_every(s, 10)),
    "ia3": lambda s: Plan(ia3_groups=("key", "value", "ffn_out"), ia3_layers=_all_layers(s)),
    "mam": lambda s: Plan(prefix=_every(s, 30), parallel_ffn=_every(s, 2 * s.hidden_size // 3)),
    "full": lambda s: Plan(full=True, learning_rate=FULL_FINE_TUNING_LR),
}
FULL_FINE_TUNING_LR = 1e-4  # every weight moves: a BERT fine-tuning rate, far below the adapters' rate
NEEDS_BLOCKS = {"houlsby", "pfeiffer", "parallel", "prefix-10", "mam"}


def baseline_plans(names: list[str], shape: ModelShape) -> dict[str, Plan]:
    """The plans of the named baselines for this model, in the order given."""
    plans = {}
    for name in names:
        if name not in BASELINES:
            raise UserError("baselines", f"unknown baseline '{name}'", f"use some of {', '.join(BASELINES)}")
        if name in NEEDS_BLOCKS and not shape.architecture.has_blocks:
            raise UserError("baselines", f"'{name}' needs a BERT-style model, not '{shape.model_type}'",
                            "use lora-r8, ia3 or full with this model")
        plans[name] = BASELINES[name](shape)
    return plans
