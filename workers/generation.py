"""Generation: train on the completion tokens only; score greedy generations and teacher-forced tokens.

An example is (prompt, completion). A chat example's prompt is rendered with the tokenizer's chat
template, ending in the assistant's turn; a plain prompt is tokenised as it is. The completion is
followed by the end-of-sequence token, so that the model learns to stop. An example longer than
``max_seq_length`` loses the start of its prompt; the number of such examples is reported as
``truncated_examples``.
"""

from __future__ import annotations

import json

from .metrics import exact_match
from .train import autocast, batches

IGNORE = -100  # label of a token that is not learned (prompt, padding)


def _pieces(tokenizer, chat: bool, example: tuple[str, str]) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one example, whole: the completion ends with the end-of-sequence token."""
    prompt, completion = example
    if chat:
        text = tokenizer.apply_chat_template(json.loads(prompt), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = tokenizer(prompt)["input_ids"]
    return prompt_ids, tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _encode(context, examples, indices: list[int]) -> tuple[dict[int, tuple[list[int], list[int]]], int]:
    """(prompt ids, completion ids) by index, and how many examples were cut to ``max_seq_length``."""
    tokenizer, limit = context.tokenizer, context.fidelity.max_seq_length
    encoded, truncated = {}, 0
    for i in indices:
        prompt_ids, completion_ids = _pieces(tokenizer, context.data.chat, examples[i])
        if len(prompt_ids) + len(completion_ids) > limit:
            truncated += 1
            completion_ids = completion_ids[: limit - 1]
            prompt_ids = prompt_ids[len(prompt_ids) - (limit - len(completion_ids)) :]
        encoded[i] = (prompt_ids, completion_ids)
    return encoded, truncated


def _right_padded(context, rows: list[tuple[list[int], list[int]]]) -> dict:
    """input_ids, attention_mask and labels (completion tokens only), padded on the right."""
    import torch

    pad = context.tokenizer.pad_token_id
    width = max(len(p) + len(c) for p, c in rows)
    ids, mask, labels = [], [], []
    for prompt, completion in rows:
        length = len(prompt) + len(completion)
        ids.append(prompt + completion + [pad] * (width - length))
        mask.append([1] * length + [0] * (width - length))
        labels.append([IGNORE] * len(prompt) + completion + [IGNORE] * (width - length))
    tensors = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {k: torch.tensor(v, device=context.device) for k, v in tensors.items()}


class Generation:
    """Examples are (prompt, completion) pairs; the model is a causal LM."""

    @staticmethod
    def encode(context, split: str, indices: list[int]) -> dict[int, dict]:
        examples = context.data.train_texts if split == "train" else context.data.validation_texts
        encoded, _ = _encode(context, examples, indices)
        return {i: {"input_ids": p + c, "prompt": p, "completion": c} for i, (p, c) in encoded.items()}

    @staticmethod
    def lengths(tokenizer, data, indices: list[int]) -> list[int]:
        """Tokens of the given training examples, prompt and completion whole (before any cut)."""
        return [sum(map(len, _pieces(tokenizer, data.chat, data.train_texts[i]))) for i in indices]

    @staticmethod
    def collate(context, features: list[dict]) -> dict:
        return _right_padded(context, [(f["prompt"], f["completion"]) for f in features])

    @staticmethod
    def evaluate(context, model) -> dict[str, float]:
        """``exact_match`` of greedy generations and ``token_accuracy`` of the completion tokens."""
        import torch

        data = context.data
        n = data.num_scored(context.fidelity)
        encoded, truncated = _encode(context, data.validation_texts, list(range(n)))
        by_length = sorted(range(n), key=lambda i: len(encoded[i][0]))
        pad = context.tokenizer.pad_token_id
        correct = total = 0
        loss = 0.0
        generated: dict[int, str] = {}
        model.eval()
        with torch.no_grad(), autocast(context):
            for batch in batches(by_length, 2 * context.fidelity.batch_size):
                inputs = _right_padded(context, [encoded[i] for i in batch])
                labels = inputs.pop("labels")
                logits = model(**inputs).logits[:, -labels.shape[1]:-1]  # prompt tuning puts its virtual tokens first
                target = labels[:, 1:]
                learned = target != IGNORE
                correct += int(((logits.argmax(-1) == target) & learned).sum())
                loss += float(torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=IGNORE,
                                                                reduction="sum"))
                total += int(learned.sum())
                prompts = [encoded[i][0] for i in batch]
                width = max(len(p) for p in prompts)
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=context.device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=context.device)
                longest = max(len(encoded[i][1]) for i in batch) + 2  # room for trailing punctuation
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=longest, do_sample=False,
                                     pad_token_id=pad, eos_token_id=context.tokenizer.eos_token_id)
                texts = context.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                generated.update(zip(batch, texts))
        references = [data.validation_texts[i][1] for i in range(n)]
        return {"exact_match": exact_match(references, [generated[i] for i in range(n)]),
                "token_accuracy": correct / max(1, total), "eval_loss": loss / max(1, total),
                "truncated_examples": float(truncated)}
