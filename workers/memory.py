"""Peak training memory of a plan, estimated before it runs: the memory budget and the OOM record.

The estimate adds four parts, in bytes:

- **weights**: the base model and the plan's own weights, in fp32 (bf16 autocast on a GPU keeps
  fp32 weights). With ``Fidelity.base_dtype`` bfloat16 the base's linear layers
  (``ModelShape.matmul_params``) are 2 bytes a weight, and every trainable parameter (the base's own
  that train, such as the head, cast to fp32) 4 more; a full fine-tuning trains them all in fp32;
- **training state**: a gradient and AdamW's two moments per trainable parameter, in fp32;
- **activations**: what autograd keeps for the backward pass, for ``batch_size x max_seq_length``
  tokens, in every layer from the lowest one the plan trains to the top (below it nothing needs a
  gradient, so nothing is kept). Per token and layer that is ``ACT_HIDDEN`` hidden-size vectors
  (layer norms, attention inputs and output, residual and dropout), ``ACT_FFN`` MLP-width vectors
  (the activation function's inputs and outputs) and attention score rows per head
  (``max_seq_length`` wide): ``ACT_SCORES`` of them, ``ACT_SCORES_DROPOUT`` where the attention
  probabilities go through dropout (scores, probabilities, mask and dropped probabilities). On a
  GPU there are none: PyTorch's fused attention kernels on CUDA (flash or memory-efficient, which
  transformers picks by default) keep no score rows and recompute them in the backward pass;
  a family whose attention is its own code (``Family.fused_attention``: DeBERTa) keeps them there
  too. Relative attention adds ``ACT_RELATIVE`` position score rows per head,
  ``ModelShape.relative_width`` wide (DeBERTa: 1.7 to 1.9 measured by what autograd keeps).
  Elements are 4 bytes, 2 under bf16 autocast on a GPU (a bf16 base on a CPU trains in autocast
  too, but CPU autocast keeps most activations in fp32: 4 bytes there). With gradient
  checkpointing only each layer's input is kept, plus two layers' worth while one is recomputed
  and its backward pass runs;
- **output**: a causal LM's logits over the vocabulary (fp32, with their log-softmax and its
  gradient); a classifier's are negligible.

It is an upper bound in spirit (every sequence at ``max_seq_length``) and leaves out the
framework's own overhead (the CUDA context, the Python process), which is the same for every plan.
``benchmarks/memory.py`` sets it beside the measured peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from .methods.base import method
from .models import ModelShape
from .plan import Plan
from .types import Fidelity

FP32 = 4
BF16 = 2
ACT_HIDDEN = 16
ACT_FFN = 3
ACT_SCORES = 1
ACT_SCORES_DROPOUT = 4
ACT_RELATIVE = 2
LOGIT_COPIES = 3
GB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    training_state: int
    activations: int
    output: int

    @property
    def total(self) -> int:
        return self.weights + self.training_state + self.activations + self.output

    @property
    def total_gb(self) -> float:
        return self.total / GB

    def to_dict(self) -> dict[str, float]:
        """The parts in GiB, as recorded with a trial."""
        return {"memory_estimate_gb": self.total_gb, "memory_weights_gb": self.weights / GB,
                "memory_training_state_gb": self.training_state / GB,
                "memory_activations_gb": (self.activations + self.output) / GB}


def lowest_trained_layer(plan: Plan, shape: ModelShape) -> int | None:
    """The lowest transformer layer with something to train; None when only the head trains."""
    layers = set().union(*(method(m).layers(plan[m], shape) for m in plan.methods)) if plan.methods else set()
    return min(layers) if layers else None


def estimate_memory(plan: Plan, shape: ModelShape, fidelity: Fidelity, trainable: int, gpu: bool = False) -> MemoryEstimate:
    """Peak training memory of ``plan`` (which trains ``trainable`` parameters) at ``fidelity``."""
    own = 0 if plan.full else trainable
    element = BF16 if gpu else FP32  # CPU autocast keeps most activations in fp32 (benchmarks/memory.py)
    tokens = fidelity.batch_size * fidelity.max_seq_length
    rows = 0  # score rows per head and token: none where CUDA's fused attention recomputes them
    if not gpu or not shape.family.fused_attention:
        scores = ACT_SCORES_DROPOUT if shape.attention_dropout else ACT_SCORES
        rows = scores * fidelity.max_seq_length + ACT_RELATIVE * shape.relative_width
    per_layer = tokens * element * (ACT_HIDDEN * shape.hidden_size + ACT_FFN * shape.ffn_size + shape.num_heads * rows)
    lowest = lowest_trained_layer(plan, shape)
    kept = 0 if lowest is None else shape.num_layers - lowest
    if fidelity.gradient_checkpointing and kept:
        activations = kept * tokens * element * shape.hidden_size + 2 * per_layer
    else:
        activations = kept * per_layer
    output = tokens * shape.vocab_size * FP32 * LOGIT_COPIES if shape.num_labels == 0 else 0
    if fidelity.base_dtype == "bfloat16" and not plan.full:
        weights = shape.matmul_params * BF16 + (shape.base_params - shape.matmul_params + trainable) * FP32
    else:
        weights = (shape.base_params + own) * FP32
    return MemoryEstimate(weights=weights, training_state=3 * trainable * FP32,
                          activations=activations, output=output)


class SavedActivations:
    """The peak bytes of the tensors autograd keeps for the backward pass, each storage once, parameters left
    out: what the estimate's activations stand for, measured (a ``torch.autograd.graph.saved_tensors_hooks``
    pair, ``pack`` and ``unpack``)."""

    def __init__(self):
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors saved from it still held]
        self.bytes = self.peak = 0

    def pack(self, tensor):
        import torch

        if isinstance(tensor, torch.nn.Parameter) or isinstance(tensor._base, torch.nn.Parameter):
            return tensor
        return _Saved(self, tensor)

    @staticmethod
    def unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def hold(self, storage) -> None:
        entry = self.live.setdefault(storage.data_ptr(), [storage.nbytes(), 0])
        entry[1] += 1
        if entry[1] == 1:
            self.bytes += entry[0]
            self.peak = max(self.peak, self.bytes)

    def release(self, address: int) -> None:
        entry = self.live[address]
        entry[1] -= 1
        if entry[1] == 0:
            self.bytes -= entry[0]
            del self.live[address]


class _Saved:
    def __init__(self, owner: SavedActivations, tensor):
        self.owner, self.tensor, self.address = owner, tensor, tensor.untyped_storage().data_ptr()
        owner.hold(tensor.untyped_storage())

    def __del__(self):
        self.owner.release(self.address)
