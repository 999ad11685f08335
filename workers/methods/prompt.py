"""Prompt tuning (Lester et al., 2021; peft's ``PROMPT_TUNING``): learned embeddings of virtual tokens
put before every input. peft's prompt learning wraps the whole model, so a plan with a prompt has
no other method (a space that names ``prompt`` names nothing else); it works on encoders and
decoders alike, and trains the number of tokens times the input embeddings' width (which ELECTRA-small
and OPT-350m project up to a wider hidden size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..types import SpaceError
from .base import register_method
from .sized import SizedMethod


@dataclass(frozen=True)
class Prompt:
    method: ClassVar[str] = "prompt"
    tokens: int


class PromptMethod(SizedMethod):
    name = "prompt"
    title = "prompt tuning"
    part = Prompt
    order = 70
    peft_type = "PROMPT_TUNING"
    parameter_prefix = "prompt_encoder"
    mergeable = False
    bounded_by_width = False
    learning_rate_scale = 10.0  # soft prompts train at far higher rates than LoRA in their papers
    baselines = {"prompt-20": lambda s: (Prompt(20),)}

    def check(self, spec, shape, alone: bool) -> None:
        if not alone:
            raise SpaceError("modules.prompt", "prompt tuning cannot share a model with other methods (peft's prompt learning "
                             "wraps the whole model)", "search prompt tuning in a space of its own")
        super().check(spec, shape, alone)

    def decode(self, spec, value, layers, shape) -> Prompt | None:
        size = value["prompt.size"]
        return Prompt(size) if size else None  # the prompt goes before the input, whatever the layers

    def smallest(self, spec, shape, layers) -> Prompt | None:
        positive = [s for s in spec.choices(shape.hidden_size) if s > 0]
        return Prompt(min(positive)) if positive else None

    def count(self, part: Prompt, shape) -> int:
        return part.tokens * shape.embedding_width

    def peft_kwargs(self, part: Prompt, shape) -> dict:
        return {"num_virtual_tokens": part.tokens, "token_dim": shape.embedding_width, "num_transformer_submodules": 1,
                "num_layers": shape.num_layers, "num_attention_heads": shape.num_heads}

    def describe(self, part: Prompt) -> str:
        return f"prompt {part.tokens} tokens"


register_method(PromptMethod())
