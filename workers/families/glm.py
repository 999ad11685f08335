"""GLM and GLM-4: Llama's attention (q/k/v/o, grouped-query) with Phi-3's MLP, its gate and input fused in
gate_up_proj (``ffn_gate_in``)."""

from dataclasses import replace

from .base import register_family
from .llama import LLAMA

GLM = register_family(replace(
    LLAMA, name="glm", model_types=("glm", "glm4"),
    groups={**{g: LLAMA.groups[g] for g in ("query", "key", "value", "attention_output")},
            "ffn_gate_in": "mlp.gate_up_proj", "ffn_out": "mlp.down_proj"},
))
