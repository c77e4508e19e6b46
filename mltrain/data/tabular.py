"""A CSV table: one column is the target, the others (or data.features) the inputs.

A column is numeric when every non-empty value parses as a number; it is then standardised with
the train split's mean and std. Any other column is categorical: one-hot over the categories seen
in train (unseen ones encode as all zeros). The encoding and the class names are the data state, so
eval encodes exactly as training did.
"""

from __future__ import annotations

import csv as csv_module
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import PrivateAttr

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, REGRESSION, VECTOR, did_you_mean
from .dataset import DataSpec, DataSplits
from .files import regular_file
from .sections import FileDataConfig, HeldOutTest, Task
from .splits import split_arrays

LISTED_CATEGORIES = 20  # categories a message lists before it only counts them
MAX_GUESSED_CLASSES = 50  # more distinct numbers than this look like a quantity, not class ids


def _read_table(file: Path, key: str = "data.path") -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the rows (as strings) and each row's line number in the file; `key` names
    where the path came from in a message about it."""
    regular_file(file, key, "a CSV file with a header row")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:  # a BOM (as Excel writes) is not a name
            reader = csv_module.reader(handle)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{file}:{reader.line_num}: {len(row)} values, but the header has "
                                    f"{len(header)} columns")
                rows.append([value.strip() for value in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as error:
        raise UserError(f"{key} {file}: not UTF-8 text (invalid byte at offset {error.start}); "
                        "convert it to UTF-8 first") from None
    except (OSError, csv_module.Error) as error:
        problem = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise UserError(f"{key} {file}: cannot read it as CSV ({problem}); give a comma-separated UTF-8 "
                        "file with a header row") from None
    if header is None or not rows:
        raise UserError(f"{key} {file}: no data rows; give a header row and at least one row of values")
    header = [name.strip() for name in header]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{key} {file}: column name{'s' if len(repeated) > 1 else ''} "
                        f"{', '.join(repr(name) for name in repeated)} appear more than once in the header; "
                        "give every column its own name")
    return header, rows, lines


def _column(file: Path, header: list[str], name: str, key: str) -> int:
    if name not in header:
        raise UserError(f"{key} '{name}': {file} has no such column; {did_you_mean(name, header)}"
                        f"columns: {', '.join(header)}")
    return header.index(name)


def _as_number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _is_numeric(values: list[str]) -> bool:
    return all(_as_number(value) is not None for value in values if value)


def _numbers(file: Path, name: str, values: list[str], lines: list[int], what: str) -> np.ndarray:
    """The column as float64, each value finite and present, or a UserError naming the row."""
    for value, line in zip(values, lines):
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            shown = "not a number" if number is None and value else "empty" if not value else "not finite"
            raise UserError(f"{file}:{line}: column '{name}' is {shown} there; {what} must be finite numbers: "
                            "fill in or drop that row")
    return np.array([float(value) for value in values], dtype=np.float64)


def _targets(file: Path, name: str, values: list[str], lines: list[int], task: str, task_from_head: bool,
             class_names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """Regression: float32 targets. Classification: int64 class ids and the class names
    (numeric names in numeric order, others sorted), or the stored names when rebuilding.
    A task that only the head chose refuses to turn a quantity into classes."""
    if task == "regression":
        if sum(_as_number(value) is not None for value in values) < len(values) / 2:  # mostly text
            raise UserError(f"data.target '{name}': {file} holds text labels there, but model.head linear does "
                            "regression on numbers; the head is the problem: use model.head: softmax for classes")
        return _numbers(file, name, values, lines, "regression targets").astype(np.float32), None
    if class_names is None:
        for value, line in zip(values, lines):
            if not value.strip():
                raise UserError(f"{file}:{line}: column '{name}' is empty there; every row needs its class: "
                                "fill in or drop that row")
        distinct = set(values)
        numeric = _is_numeric(list(distinct))
        if numeric:
            _numbers(file, name, values, lines, "numeric class labels")  # finite, or the row is named
        class_names = sorted(distinct, key=float) if numeric else sorted(distinct)
        if len(class_names) < 2:
            raise UserError(f"data.target '{name}': every row of {file} has the class {values[0]!r}; "
                            "classification needs at least 2 classes")
        if task_from_head and numeric and _looks_like_a_quantity(class_names):
            shown = ", ".join(class_names if len(class_names) <= 4 else [*class_names[:3], "...", class_names[-1]])
            raise UserError(f"data.target '{name}': {file} holds {len(class_names)} distinct numbers there "
                            f"({shown}), and a classification head "
                            "would make each one a class; for a quantity use model.head: linear (regression), "
                            "or if they are class ids say so with data.task: classification")
    index = {class_name: i for i, class_name in enumerate(class_names)}
    for value, line in zip(values, lines):
        if value not in index:
            raise UserError(f"{file}:{line}: target '{value}' in column '{name}' is not one of the classes the "
                            f"model was trained on: {', '.join(class_names)}")
    return np.array([index[value] for value in values], dtype=np.int64), class_names


def _looks_like_a_quantity(numbers: list[str]) -> bool:
    """Numbers with a fraction, or too many distinct ones to be class ids."""
    return len(numbers) > MAX_GUESSED_CLASSES or any(not float(number).is_integer() for number in numbers)


def _encoding(file: Path, header: list[str], rows: list[list[str]], lines: list[int],
              features: list[str]) -> list[dict]:
    """How each feature column is encoded, from the training rows: mean and std, or categories."""
    columns = []
    for name in features:
        values = [row[header.index(name)] for row in rows]
        if _is_numeric(values):
            numbers = _numbers(file, name, values, lines, "numeric features")
            columns.append({"name": name, "mean": float(numbers.mean()), "std": float(numbers.std()) or 1.0})
        else:
            columns.append({"name": name, "categories": sorted(set(values))})
    return columns


def _encode(file: Path, header: list[str], rows: list[list[str]], lines: list[int],
            columns: list[dict]) -> np.ndarray:
    """(N, F) float32: standardised numbers and one-hot categories, in column order."""
    parts = []
    for column in columns:
        values = [row[_column(file, header, column["name"], "data.features")] for row in rows]
        if "categories" in column:
            index = {category: i for i, category in enumerate(column["categories"])}
            one_hot = np.zeros((len(rows), len(index)), dtype=np.float32)
            for row, value in enumerate(values):
                if value in index:
                    one_hot[row, index[value]] = 1.0
            parts.append(one_hot)
        else:
            numbers = _numbers(file, column["name"], values, lines, "numeric features")
            parts.append(((numbers - column["mean"]) / column["std"]).astype(np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def encode_rows(file: Path, columns: list[dict], key: str) -> tuple[np.ndarray, list[int]]:
    """New rows of a table encoded as the training rows were (`columns`: the stored encoding), and
    their line numbers. Other columns (the target, say) are ignored. A missing feature column or a
    category the training rows did not have is a UserError naming the file and the encoding."""
    header, rows, lines = _read_table(file, key)
    missing = [column["name"] for column in columns if column["name"] not in header]
    if missing:
        raise UserError(f"{key} {file}: no column {', '.join(repr(name) for name in missing)}; the model reads the "
                        f"feature columns {', '.join(column['name'] for column in columns)} "
                        f"(columns here: {', '.join(header)})")
    for column in columns:
        if "categories" in column:
            index, known = header.index(column["name"]), set(column["categories"])
            for row, line in zip(rows, lines):
                if row[index] not in known:
                    categories = column["categories"]
                    shown = ", ".join(map(repr, categories[:LISTED_CATEGORIES])) \
                        + (f", ... ({len(categories)} in all)" if len(categories) > LISTED_CATEGORIES else "")
                    raise UserError(f"{file}:{line}: column '{column['name']}' is {row[index]!r}, a category the "
                                    f"training rows did not have; the column is one-hot encoded over {shown}: "
                                    "use one of those")
    return _encode(file, header, rows, lines, columns), lines


class CSVConfig(FileDataConfig, HeldOutTest):
    target: str
    """the column to predict"""
    features: tuple[str, ...] | None = None
    """the input columns; null: every column but the target"""
    task: Task = "auto"
    """what the target is; auto: from model.head (linear: regression)"""
    _task_from_head: bool = PrivateAttr(False)  # auto was resolved from model.head, not written

    def own_values(self) -> dict[str, Any]:
        return {**super().own_values(), "task_from_head": self._task_from_head}


@DATASETS.register("csv", "a table (data.path) with a header row: data.target column predicted from data.features; "
                   "text columns one-hot, numbers standardised", CSVConfig,
                   tags={VECTOR, CLASSIFICATION, REGRESSION})
def csv(val_split: float, seed: int, path: str, target: str, features: tuple[str, ...] | None, task: str,
        test_split: float, task_from_head: bool = False, columns: list[dict] | None = None,
        class_names: list[str] | None = None) -> DataSplits:
    """`columns` and `class_names` are the stored encoding when rebuilding for a checkpoint."""
    file = Path(path)
    header, rows, lines = _read_table(file)
    target_index = _column(file, header, target, "data.target")
    chosen = list(features) if features is not None else [name for name in header if name != target]
    for name in chosen:
        _column(file, header, name, "data.features")
    if target in chosen or not chosen:
        raise UserError(f"data.features: give at least one column other than the target '{target}'")
    y, class_names = _targets(file, target, [row[target_index] for row in rows], lines, task, task_from_head,
                              class_names)
    held = split_arrays((np.arange(len(rows)), y), val_split, seed, test_split)  # row indices per split
    if columns is None:
        train_rows = held["train"][0]
        columns = _encoding(file, header, [rows[i] for i in train_rows], [lines[i] for i in train_rows], chosen)
    splits = {name: (torch.from_numpy(_encode(file, header, [rows[i] for i in index], [lines[i] for i in index],
                                              columns)), torch.from_numpy(ys))
              for name, (index, ys) in held.items()}
    width = splits["train"][0].shape[1]
    spec = DataSpec((width,), len(class_names) if class_names else None, tuple(class_names or ()))
    return DataSplits(spec, splits, {"columns": columns, "class_names": class_names})
