"""Gemma 3 of 4B and more parameters: an image-text model whose language model is built like Llama.

Its decoder layers sit in ``model.language_model.layers``, beside a SigLIP vision tower whose
attention and MLP take the same module names; the layers' path keeps every plan to the language
model, and full fine-tuning trains the language model and the head alone. Gemma 3 of 1B and less
(``gemma3_text``) has no vision tower and is the ``llama`` family.
"""

from dataclasses import replace

from .base import register_family
from .llama import LLAMA

GEMMA3 = register_family(replace(LLAMA, name="gemma3", model_types=("gemma3",), layers_path="language_model.layers",
                                 frozen=("vision_tower", "multi_modal_projector")))
