"""One encoder for every table source: feature columns to model inputs, learned from the training
rows and stored in the checkpoint, so eval, predict and an export's sidecar encode new rows the
same way.

A numeric column is standardised with the training rows' mean and std. A text column is one-hot
over the categories the training rows have. Empty cells, with `data.missing: fill`, become the
training median plus a 0/1 `<column>_missing` indicator (for columns with empty cells in
training; fastai's FillMissing), or the category `missing`; with `error`, every empty cell is
listed in one message.

The stored encoding, one entry per feature column: {"name", "mean", "std"} (with fill: "fill",
the median, and "indicator") or {"name", "categories"} (with fill: "fill": "missing").
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import UserError
from .table_files import Column, Table

MISSING = "missing"  # the category an empty text cell becomes with data.missing: fill
LISTED = 10  # empty cells a message lists before it only counts them
LISTED_CATEGORIES = 20  # categories a message lists before it only counts them
ID_LIKE_MIN_ROWS = 20  # fewer rows than this can be all distinct by chance


def refuse_missing(table: Table, names: list[str], what: str, trained: bool = False) -> None:
    """With data.missing: error, every empty cell of `names` in one message; `trained`: new rows
    for a model trained that way, which only filled-in cells can help."""
    cells = [(row, name) for name in names for row in np.flatnonzero(table.columns[name].missing)]
    if cells:
        cells.sort()
        shown = "; ".join(f"{table.where(row)} column '{name}'" for row, name in cells[:LISTED])
        more = f" and {len(cells) - LISTED} more" if len(cells) > LISTED else ""
        advice = ("the model was trained with data.missing: error, so fill them in (or train with data.missing: "
                  "fill)") if trained else ("set data.missing: fill to fill them (numbers: the training median and "
                                            "a <column>_missing indicator; text: a 'missing' category), or fill them "
                                            "in the file")
        raise UserError(f"{table.path}: {len(cells)} empty {what} cell{'s' if len(cells) > 1 else ''}: "
                        f"{shown}{more}; {advice}")


def fit(table: Table, features: list[str], missing: str) -> list[dict]:
    """The encoding of `features`, learned from `table` (the training rows)."""
    encoding = []
    for name in features:
        column = table.columns[name]
        gaps = column.missing
        if column.numeric:
            _refuse_infinite(table, name, column)
            present = column.numbers[~gaps]
            if not len(present):
                raise UserError(f"data.features '{name}': every training row of {table.path} is empty there; "
                                "leave the column out of data.features")
            entry = {"name": name, "mean": float(present.mean()), "std": float(present.std()) or 1.0}
            if missing == "fill":
                entry.update(fill=float(np.median(present)), indicator=bool(gaps.any()))
        else:
            codes, levels = column.text_codes()
            categories = set(levels[np.unique(codes[codes >= 0])].tolist())
            if missing == "fill" and gaps.any():
                categories.add(MISSING)
            entry = {"name": name, "categories": sorted(categories)}
            if missing == "fill":
                entry["fill"] = MISSING
        encoding.append(entry)
    return encoding


def feature_names(encoding: list[dict]) -> list[str]:
    """The name of each model input, in order: `age`, `age_missing`, `plan=basic`, ..."""
    names = []
    for entry in encoding:
        if "categories" in entry:
            names += [f"{entry['name']}={category}" for category in entry["categories"]]
        else:
            names += [entry["name"]] + ([f"{entry['name']}_missing"] if entry.get("indicator") else [])
    return names


def empty_category(entry: dict) -> str | None:
    """The category an empty cell is: `missing` under fill; "" in an encoding from before
    data.missing, which kept empty text as a category of its own; else none (refused)."""
    return entry.get("fill", "" if "" in entry.get("categories", ()) else None)


def encode(table: Table, encoding: list[dict], new_rows: bool = False) -> np.ndarray:
    """(N, F) float32 model inputs of every row of `table`, as `encoding` says. A category the
    training rows did not have is all zeros in the held-out splits, and refused in `new_rows`
    (predict's), where it is most likely a typo."""
    empty = [entry["name"] for entry in encoding
             if empty_category(entry) is None and table.columns[entry["name"]].missing.any()]
    refuse_missing(table, empty, "feature", trained=new_rows)
    parts = []
    for entry in encoding:
        column = table.columns[entry["name"]]
        if "categories" in entry:
            parts.append(_one_hot(table, entry, column, new_rows))
            continue
        if not column.numeric:
            text = next((level for level, value in enumerate(column.levels) if not is_number(value)), 0)
            raise UserError(f"{table.where(int(np.argmax(column.codes == text)))}: column '{entry['name']}' is not a "
                            "number there; the model reads it as numbers: fix or drop that row")
        _refuse_infinite(table, entry["name"], column)
        gaps = column.missing
        values = np.where(gaps, entry.get("fill", 0.0), column.numbers)
        parts.append(((values - entry["mean"]) / entry["std"]).astype(np.float32)[:, None])
        if entry.get("indicator"):
            parts.append(gaps.astype(np.float32)[:, None])
    return np.concatenate(parts, axis=1)


def _one_hot(table: Table, entry: dict, column: Column, refuse_unknown: bool) -> np.ndarray:
    """Each row's category as a one-hot row; an empty cell is the `missing` category where the
    training rows had one, else all zeros; so is a category training did not see, unless refused."""
    categories = entry["categories"]
    index = {category: i for i, category in enumerate(categories)}
    codes, levels = column.text_codes()
    empty = empty_category(entry)
    level_positions = np.array([index.get(level, -1) for level in levels] + [index.get(empty, -1)], dtype=np.int64)
    positions = level_positions[codes]  # code -1 (an empty cell) takes the last: the missing category's
    unknown = [code for code in np.unique(codes[codes >= 0]) if level_positions[code] < 0]
    if unknown and refuse_unknown:
        row = int(np.argmax(codes == unknown[0]))
        shown = ", ".join(map(repr, categories[:LISTED_CATEGORIES])) \
            + (f", ... ({len(categories)} in all)" if len(categories) > LISTED_CATEGORIES else "")
        raise UserError(f"{table.where(row)}: column '{entry['name']}' is {str(levels[unknown[0]])!r}, a category the "
                        f"training rows did not have; the column is one-hot encoded over {shown}: use one of those")
    one_hot = np.zeros((len(codes), len(categories)), dtype=np.float32)
    known = positions >= 0
    one_hot[np.flatnonzero(known), positions[known]] = 1.0
    return one_hot


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _refuse_infinite(table: Table, name: str, column: Column) -> None:
    infinite = np.flatnonzero(np.isinf(column.numbers))
    if len(infinite):
        raise UserError(f"{table.where(int(infinite[0]))}: column '{name}' is not finite there; numeric features "
                        "must be finite numbers: fix or drop that row")


def warn_id_like(table: Table, features: list[str]) -> None:
    """A feature that differs in every training row, as IDs do, teaches the model nothing it can
    use on new rows: say so (and how to name it), once, on stderr."""
    if table.rows < ID_LIKE_MIN_ROWS:
        return
    for name in features:
        column = table.columns[name]
        if column.numeric and not np.all(np.mod(column.numbers[~column.missing], 1) == 0):
            continue  # measurements differ row to row without being IDs
        codes = column.text_codes()[0]
        if len(np.unique(codes[codes >= 0])) == table.rows:
            print(f"warning: data.features '{name}' has a different value in every training row, as an ID does; "
                  f"if it is one, set data.id_column: {name} (never a feature, carried into predict's rows)",
                  file=sys.stderr)
