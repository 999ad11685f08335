"""LoRA (Hu et al., 2021): a rank per module group, per block of layers, in the layers chosen; and
its variants, one per plan: DoRA (Liu et al., 2024: a learned magnitude per output unit), rsLoRA
(Kalajdzievski, 2023: alpha / sqrt(rank) scaling) and PiSSA (Meng et al., 2024: the factors start
as the weight's principal singular vectors, by peft's fast randomised SVD, and the base weight
keeps the residual).

A plan's LoRA part is one plain ``peft.LoraConfig`` (see ``ranked``). A PiSSA adapter is saved as
peft converts one: a plain LoRA of twice the rank, the trained factors beside the negated starting
ones, so that it loads on the unchanged base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from .base import query_and_value, register_method
from .ranked import Ranked, RankedMethod, RankedSpace, RankTarget, active, layer_blocks

LoraTarget = RankTarget
VARIANTS = {"plain": {}, "dora": {"use_dora": True}, "rslora": {"use_rslora": True},
            "pissa": {"init_lora_weights": "pissa_niter_4"}}

__all__ = ["Lora", "LoraSpace", "LoraTarget", "layer_blocks"]


@dataclass(frozen=True)
class Lora(Ranked):
    method: ClassVar[str] = "lora"
    variant: str = "plain"


class LoraSpace(RankedSpace):
    variants: list[Literal["plain", "dora", "rslora", "pissa"]] = Field(["plain"], min_length=1,
                                                               description="LoRA variants to choose among, one per plan")

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants: list[str]) -> list[str]:
        if len(set(variants)) != len(variants):
            raise ValueError("variants must be distinct")
        return variants


class LoraMethod(RankedMethod):
    name = "lora"
    title = "LoRA"
    part = Lora
    space = LoraSpace
    order = 10
    peft_type = "LORA"
    parameter_prefix = "lora_"
    alpha_field = "lora_alpha"
    baselines = {  # rank 8, alpha 16, every layer: on query and value, and on the MLP (its gate too, if gated)
        "lora-r8": lambda s: (METHOD.every_layer(s, query_and_value(s)),),
        "lora-mlp-r8": lambda s: (METHOD.every_layer(s, s.family.holders(("ffn_gate", "ffn_in", "ffn_out"))),),
        "dora-r8": lambda s: (METHOD.every_layer(s, query_and_value(s), variant="dora"),),
    }

    def dimensions(self, spec: LoraSpace, shape) -> list[tuple[str, tuple]]:
        variants = [("lora.variant", tuple(spec.variants))] if len(spec.variants) > 1 else []
        return super().dimensions(spec, shape) + variants

    def make(self, targets, spec=None, value=None) -> Lora:
        if spec is None:
            return Lora(targets)
        variant = value["lora.variant"] if value is not None and len(spec.variants) > 1 else spec.variants[0]
        return Lora(targets, variant)

    def per_module(self, rank: int, fan_in: int, fan_out: int, part: Lora) -> int:
        return rank * (fan_in + fan_out) + (fan_out if part.variant == "dora" else 0)

    def extra_kwargs(self, part: Lora, shape) -> dict:
        return {"lora_dropout": 0.0, "fan_in_fan_out": shape.family.fan_in_fan_out, **VARIANTS[part.variant]}

    def after_build(self, model, part: Lora) -> None:
        if part.variant == "pissa":
            model.autopeft_pissa_start = {name: (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
                                          for name, m in model.named_modules() if "default" in getattr(m, "lora_A", {})}

    def rewrites_export(self, part: Lora) -> bool:
        return part.variant == "pissa"

    def export(self, part: Lora, model, tensors: dict, config: dict) -> None:
        import torch

        for name, (a0, b0) in model.autopeft_pissa_start.items():
            for adapter in ("", ".default"):
                a, b = f"{name}.lora_A{adapter}.weight", f"{name}.lora_B{adapter}.weight"
                if a in tensors:
                    tensors[a] = torch.cat([tensors[a], a0.to(tensors[a])], dim=0).contiguous()
                    tensors[b] = torch.cat([tensors[b], -b0.to(tensors[b])], dim=1).contiguous()
        config.update(init_lora_weights=True, r=2 * config["r"], lora_alpha=2 * config["lora_alpha"],
                      rank_pattern={k: 2 * v for k, v in config["rank_pattern"].items()},
                      alpha_pattern={k: 2 * v for k, v in config["alpha_pattern"].items()})

    def describe(self, part: Lora) -> str:
        text = super().describe(part)
        return text if part.variant == "plain" else f"{part.variant} {text}"

    def from_legacy(self, data) -> Lora | None:
        targets = active(self.from_dict({"targets": data.get("lora", [])}).targets)
        return Lora(targets) if targets else None


METHOD = register_method(LoraMethod())
