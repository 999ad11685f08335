"""The built-in trainer: AdamW with linear warm-up and decay, then evaluation on the validation split.

Classification trains the sequence-classification head and the plan's modules on the labels;
generation trains the plan's modules on the completion tokens only (``workers/generation.py``).
"""

from __future__ import annotations

import copy
import random

from .build import parameter_groups
from .methods import method
from .metrics import score


def batches(indices: list[int], size: int):
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


PAIR_JOINER = "\n\n"


def _encoded(tokenizer, texts, indices, **kwargs):
    """The tokenizer's encoding of the given examples, one text or a pair each. A tokenizer without a
    separator token (a decoder's) would put a pair's second text straight after the first, with neither
    space nor separator ("the cat sat" and "a dog ran" read "the cat sata dog ran"): its pairs are one
    text, the two a blank line apart."""
    columns = list(zip(*(texts[i] for i in indices)))
    if len(columns) == 2 and tokenizer.sep_token is None:
        columns = [[first + PAIR_JOINER + second for first, second in zip(*columns, strict=True)]]
    return tokenizer(*columns, **kwargs)


def _tokenize(context, texts, indices) -> dict[int, dict]:
    """Token ids of the given examples, unpadded, by example index."""
    encoded = _encoded(context.tokenizer, texts, indices, truncation=True, max_length=context.fidelity.max_seq_length)
    return {i: {k: encoded[k][j] for k in encoded} for j, i in enumerate(indices)}


def _collate(context, features: list[dict]):
    batch = context.tokenizer.pad(features, return_tensors="pt")
    return {k: v.to(context.device) for k, v in batch.items()}


def _length_grouped(indices: list[int], tokens: dict[int, dict], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: less padding, same examples (as in HF's group_by_length)."""
    order = list(indices)
    rng.shuffle(order)
    chunk = 16 * batch_size
    result = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: len(tokens[i]["input_ids"]))
        result.extend(block[k : k + batch_size] for k in range(0, len(block), batch_size))
    rng.shuffle(result)
    return result


def autocast(context):
    """bf16 autocast on a GPU that has bf16, and wherever the base is in bf16 (``Fidelity.base_dtype``): there
    the fp32 modules that train and the bf16 layers around them need a common dtype, on a CPU too."""
    import contextlib

    import torch

    if (context.device.type == "cuda" and torch.cuda.is_bf16_supported()) or context.fidelity.base_dtype == "bfloat16":
        return torch.autocast(device_type=context.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Classification:
    """Examples are text (pairs) with integer labels; the model returns logits over the labels."""

    @staticmethod
    def encode(context, split: str, indices: list[int]) -> dict[int, dict]:
        data = context.data
        texts, labels = (data.train_texts, data.train_labels) if split == "train" else (data.validation_texts, data.validation_labels)
        tokens = _tokenize(context, texts, indices)
        for i in indices:
            tokens[i]["labels"] = labels[i]
        return tokens

    @staticmethod
    def lengths(tokenizer, data, indices: list[int]) -> list[int]:
        """Tokens of the given training examples, whole (before any cut)."""
        return [len(ids) for ids in _encoded(tokenizer, data.train_texts, indices, truncation=False, verbose=False)["input_ids"]]

    @staticmethod
    def collate(context, features: list[dict]) -> dict:
        return _collate(context, features)

    @staticmethod
    def evaluate(context, model) -> dict[str, float]:
        import torch

        data = context.data
        n = data.num_scored(context.fidelity)
        tokens = _tokenize(context, data.validation_texts, list(range(n)))
        by_length = sorted(range(n), key=lambda i: len(tokens[i]["input_ids"]))
        predictions: dict[int, int] = {}
        loss = 0.0
        model.eval()
        with torch.no_grad(), autocast(context):
            for batch in batches(by_length, 2 * context.fidelity.batch_size):
                logits = model(**_collate(context, [tokens[i] for i in batch])).logits
                predictions.update(zip(batch, logits.argmax(dim=-1).tolist()))
                targets = torch.tensor([data.validation_labels[i] for i in batch], device=logits.device)
                loss += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
        labels = list(data.validation_labels[:n])
        return {context.metric: score(context.metric, labels, [predictions[i] for i in range(n)]), "eval_loss": loss / n}


def task_of(context):
    return task_for(context.data.kind)


def task_for(kind: str):
    """The task of a kind of data: ``Classification`` or ``Generation``."""
    if kind == "generation":
        from .generation import Generation

        return Generation
    return Classification


def evaluate(context, model) -> dict[str, float]:
    """Score ``model`` on the first ``fidelity.eval_examples`` validation examples."""
    return task_of(context).evaluate(context, model)


def evaluate_test(context, model) -> dict[str, float]:
    """Score ``model`` on every example of the test split, each metric's name prefixed with ``test_``."""
    held_out = copy.copy(context)  # the same loaded model and tokenizer
    held_out.data = context.data.test_as_validation()
    held_out.fidelity = context.fidelity.model_copy(update={"eval_examples": len(context.data.test_texts)})
    return {f"test_{name}": value for name, value in evaluate(held_out, model).items()}


class TrainingBatches:
    """The training examples of a trial, encoded, and their batches: ``epoch()`` shuffles the next epoch's."""

    def __init__(self, context, task):
        self.rng = random.Random(context.seed)
        pool = list(range(len(context.data.train_texts)))
        self.subset = self.rng.sample(pool, context.fidelity.examples(len(pool)))
        self.tokens = task.encode(context, "train", self.subset)
        self.size = context.fidelity.batch_size

    def epoch(self) -> list[list[int]]:
        return _length_grouped(self.subset, self.tokens, self.size, self.rng)


def train(context) -> tuple[object, list[float]]:
    """Apply the plan and train it at the trial's fidelity; returns the model and the loss of every step it trained.

    With a rung (``context.stop_at`` below 1) it trains from ``context.resume`` up to that fraction of
    the steps and leaves a checkpoint in ``context.checkpoint``: the learning-rate schedule is the whole
    training's, so that rungs trained one after another train exactly as one training would.
    """
    import torch

    task = task_of(context)
    fidelity = context.fidelity
    model = context.apply_plan()
    examples = TrainingBatches(context, task)
    total_steps = fidelity.steps(len(examples.subset))
    stop = total_steps if context.stop_at >= 1 else min(total_steps, max(1, round(context.stop_at * total_steps)))
    warmup = int(fidelity.warmup_ratio * total_steps)
    learning_rate = context.plan.learning_rate or fidelity.learning_rate
    optimizer = torch.optim.AdamW(parameter_groups(model, context.plan, learning_rate))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )
    if fidelity.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    hooks = [(method(name), context.plan[name]) for name in context.plan.methods]
    for descriptor, part in hooks:
        descriptor.before_training(model, part, total_steps)
    torch.manual_seed(context.seed)
    start = _restore(context.resume, model, optimizer, schedule) if context.resume is not None else 0
    model.train()
    losses = []
    for step, batch in enumerate(_endless(examples)):
        if step >= stop:
            break
        if step < start:
            continue
        with autocast(context):
            loss = model(**task.collate(context, [examples.tokens[i] for i in batch])).loss
        loss.backward()
        optimizer.step()
        for descriptor, part in hooks:
            descriptor.after_step(model, part, step)
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if stop < total_steps:
        context.checkpoint = _checkpoint(stop, model, optimizer, schedule)
    return model, losses


def _endless(examples: TrainingBatches):
    """The batches of one epoch after another, in the order a trial of this seed always sees them."""
    while True:
        yield from examples.epoch()


def _checkpoint(step: int, model, optimizer, schedule) -> bytes:
    """The trainable weights, optimizer and schedule state and random state after ``step`` steps."""
    import io

    import torch

    state = {"step": step, "weights": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
             "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": torch.get_rng_state()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _restore(checkpoint: bytes, model, optimizer, schedule) -> int:
    """Load a checkpoint of ``_checkpoint`` into the same plan's model; returns the steps it had trained."""
    import io

    import torch

    state = torch.load(io.BytesIO(checkpoint), weights_only=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state["weights"]) != trainable:
        raise ValueError("the checkpoint holds the weights of another plan than this trial's")
    model.load_state_dict(state["weights"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def train_and_evaluate(context) -> dict[str, float]:
    """Apply the plan, train at the trial's fidelity and return the validation metrics."""
    model, losses = train(context)
    tail = losses[-max(1, len(losses) // 10) :]
    return {**evaluate(context, model), "train_loss": sum(tail) / len(tail), "train_steps": float(len(losses))}
