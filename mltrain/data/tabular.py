"""Tables: a CSV file (`csv`) or Parquet files (`parquet`), with one encoding for both. One column
is the target, the others (or data.features, never data.id_column) the inputs, encoded as
`table_encoding` says. The encoding and the class names are the data state, so eval and predict
encode exactly as training did.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, REGRESSION, VECTOR, Component, did_you_mean
from ..schema import NonNegativeInt, PositiveInt
from . import table_encoding
from .dataset import DataSpec, DataSplits
from .orders import SHUFFLE_BUFFER
from .sections import FileDataConfig, HeldOutTest, TargetTask
from .splits import split_arrays
from .table_files import Table, read_table, table_format, table_header

MAX_GUESSED_CLASSES = 50  # more distinct numbers than this look like a quantity, not class ids


def targets_of(table: Table, name: str, task: str, task_from_head: bool,
             class_names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Regression: float32 targets. Classification: int64 class ids and the class names
    (numeric names in numeric order, others sorted), or the stored names when rebuilding.
    A task that only the head chose refuses to turn a quantity into classes. Every row needs
    its target, whatever data.missing says."""
    column = table.column(name, "data.target")
    empty = np.flatnonzero(column.missing)
    if len(empty):
        raise UserError(f"{table.where(int(empty[0]))}: column '{name}' is empty there; every row needs its target "
                        f"({len(empty)} row{'s' if len(empty) > 1 else ''} lack one): fill in or drop "
                        f"{'those rows' if len(empty) > 1 else 'that row'}")
    if task == "regression":
        if not column.numeric:
            numbers = np.array([table_encoding.is_number(level) for level in column.levels])
            if (~numbers[column.codes]).sum() > table.rows / 2:  # mostly text: class labels
                raise UserError(f"data.target '{name}': {table.path} holds text labels there, but model.head linear "
                                "does regression on numbers; the head is the problem: use model.head: softmax for "
                                "classes")
            row = int(np.argmax(~numbers[column.codes]))
            raise UserError(f"{table.where(row)}: column '{name}' is not a number there; regression targets "
                            "must be finite numbers: fix or drop that row")
        if np.isinf(column.numbers).any():
            row = int(np.flatnonzero(np.isinf(column.numbers))[0])
            raise UserError(f"{table.where(row)}: column '{name}' is not finite there; regression targets must be "
                            "finite numbers: fix or drop that row")
        return column.numbers.astype(np.float32), None
    codes, levels = column.text_codes()
    if class_names is None:
        distinct = sorted(set(levels[np.unique(codes)].tolist()))
        class_names = sorted(distinct, key=float) if column.numeric else distinct
        if len(class_names) < 2:
            raise UserError(f"data.target '{name}': every row of {table.path} has the class {levels[codes[0]]!r}; "
                            "classification needs at least 2 classes")
        if task_from_head and column.numeric and _looks_like_a_quantity(class_names):
            shown = ", ".join(class_names if len(class_names) <= 4 else [*class_names[:3], "...", class_names[-1]])
            raise UserError(f"data.target '{name}': {table.path} holds {len(class_names)} distinct numbers there "
                            f"({shown}), and a classification head "
                            "would make each one a class; for a quantity use model.head: linear (regression), "
                            "or if they are class ids say so with data.task: classification")
    index = {class_name: i for i, class_name in enumerate(class_names)}
    if column.numeric:  # numbers match their class by value: a stored "1.0" is the class of 1
        by_value = {float(class_name): i for i, class_name in enumerate(class_names)
                    if table_encoding.is_number(class_name)}
        index = {level: by_value.get(float(level), -1) for level in levels}
    ids = np.array([index.get(level, -1) for level in levels], dtype=np.int64)[codes]
    if (ids < 0).any():
        row = int(np.argmax(ids < 0))
        raise UserError(f"{table.where(row)}: target '{levels[codes[row]]}' in column '{name}' is not one of "
                        f"the classes the model was trained on: {', '.join(class_names)}")
    return ids, class_names


def _looks_like_a_quantity(numbers: list[str]) -> bool:
    """Numbers with a fraction, or too many distinct ones to be class ids."""
    return len(numbers) > MAX_GUESSED_CLASSES or any(not float(number).is_integer() for number in numbers)


def encode_rows(file: Path, encoding: list[dict], key: str,
                id_column: str | None = None) -> tuple[np.ndarray, list[str], list[str] | None]:
    """New rows of a table (.csv, or .parquet) encoded as the training rows were (`encoding`: the
    stored one): the inputs, each row's name (file:line, or file row N) and its id_column value.
    Other columns (the target, say) are ignored."""
    path = Path(file)
    format = table_format(path)
    header = table_header(path, format, key)
    wanted = [entry["name"] for entry in encoding] + ([id_column] if id_column else [])
    absent = [name for name in wanted if name not in header]
    if absent:
        raise UserError(f"{key} {path}: no column {', '.join(repr(name) for name in absent)}; the model reads the "
                        f"feature columns {', '.join(entry['name'] for entry in encoding)}"
                        + (f" and the id column '{id_column}'" if id_column else "")
                        + f" (columns here: {', '.join(header)})")
    as_written = tuple(entry["name"] for entry in encoding if "categories" in entry) \
        + ((id_column,) if id_column else ())
    rows = read_table(path, format, key, wanted, text=as_written)
    ids = rows.columns[id_column].texts().tolist() if id_column else None
    return table_encoding.encode(rows, encoding, new_rows=True), [rows.where(row) for row in range(rows.rows)], ids


class TableConfig(FileDataConfig, HeldOutTest, TargetTask):
    target: str
    """the column to predict"""
    features: tuple[str, ...] | None = None
    """the input columns; null: every column but the target and the id column"""
    missing: Literal["error", "fill"] = "error"
    """empty feature cells: error (list them) | fill (numbers: train median and a <column>_missing indicator; text: a 'missing' category)"""
    id_column: str | None = None
    """a column naming each row: never a feature, carried into predict's rows"""


def feature_columns(file: Path, format: str, target: str, features: tuple[str, ...] | None,
                    id_column: str | None) -> list[str]:
    """The input columns: data.features, else every column but the target and the id column;
    every column named must exist."""
    header = table_header(file, format)
    chosen = list(features) if features is not None else [name for name in header if name not in (target, id_column)]
    for name, key in [(target, "data.target"), *((name, "data.features") for name in chosen),
                      *([(id_column, "data.id_column")] if id_column else [])]:
        if name not in header:
            raise UserError(f"{key} '{name}': {file} has no such column; {did_you_mean(name, header)}"
                            f"columns: {', '.join(header)}")
    if target in chosen or not chosen:
        raise UserError(f"data.features: give at least one column other than the target '{target}'")
    if id_column is not None and id_column in chosen:
        raise UserError(f"data.features: '{id_column}' is data.id_column, which is never a feature; leave it out")
    return chosen


def table(format: str, val_split: float, seed: int, path: str, target: str, features: tuple[str, ...] | None,
          task: str, test_split: float, missing: str, id_column: str | None, task_from_head: bool = False,
          columns: list[dict] | None = None, class_names: list[str] | None = None) -> DataSplits:
    """A `format` ("csv" or "parquet") table as splits. `columns` (the encoding) and `class_names`
    are the stored data state when rebuilding for a checkpoint."""
    file = Path(path)
    chosen = feature_columns(file, format, target, features, id_column)
    rows = read_table(file, format, "data.path", [target, *chosen])
    if missing == "error":
        table_encoding.refuse_missing(rows, chosen, "feature")
    y, class_names = targets_of(rows, target, task, task_from_head, class_names)
    held = split_arrays((np.arange(rows.rows), y), val_split, seed, test_split)  # row indices per split
    if columns is None:
        training = rows.take(held["train"][0])
        columns = table_encoding.fit(training, chosen, missing)
        table_encoding.warn_id_like(training, chosen)
    splits = {name: (torch.from_numpy(table_encoding.encode(rows.take(index), columns)), torch.from_numpy(ys))
              for name, (index, ys) in held.items()}
    width = splits["train"][0].shape[1]
    spec = DataSpec((width,), len(class_names) if class_names else None, tuple(class_names or ()))
    return DataSplits(spec, splits, {"columns": columns, "class_names": class_names})


DATASETS.add(Component(
    "csv", "a CSV table (data.path) with a header row: data.target predicted from data.features; text columns "
    "one-hot, numbers standardised, empty cells as data.missing says", partial(table, "csv"), TableConfig,
    frozenset({VECTOR, CLASSIFICATION, REGRESSION})))
class ParquetConfig(TableConfig):
    streaming: bool = False
    """true: read the feature columns a row group at a time in DataLoader workers, never whole (the target column is read whole)"""
    shuffle_buffer: PositiveInt = SHUFFLE_BUFFER
    """streamed: rows shuffled together; each epoch the row groups come in a seeded order and their rows are shuffled in blocks this large"""
    workers: NonNegativeInt = 2
    """streamed: DataLoader worker processes reading and encoding row groups"""


def parquet(val_split: float, seed: int, path: str, target: str, features: tuple[str, ...] | None, task: str,
            test_split: float, missing: str, id_column: str | None, streaming: bool, shuffle_buffer: int,
            workers: int, task_from_head: bool = False, columns: list[dict] | None = None,
            class_names: list[str] | None = None, first_samples: int | None = None) -> DataSplits:
    """A Parquet table, in memory or streamed (`first_samples`: a streamed run's, stored)."""
    if not streaming:
        return table("parquet", val_split, seed, path, target, features, task, test_split, missing, id_column,
                     task_from_head, columns, class_names)
    from .table_stream import streamed_table

    return streamed_table(val_split, seed, path, target, features, task, test_split, missing, id_column,
                          task_from_head, shuffle_buffer, workers, columns, class_names, first_samples)


DATASETS.add(Component(
    "parquet", "a Parquet table (data.path: a .parquet file or a folder of them, read with pyarrow, only the "
    "columns used) with the csv source's keys and encoding; data.streaming: true reads it a row group at a time",
    parquet, ParquetConfig, frozenset({VECTOR, CLASSIFICATION, REGRESSION})))
