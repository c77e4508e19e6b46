"""Parquet tables larger than memory (`dataset: parquet` with `data.streaming: true`).

Only the target column is read whole (one number per row: the class ids or values, which every
split, the class balance and the held-out draw need). The feature columns stay in the files and
are read a row group at a time in DataLoader workers, encoded there with the encoding that the
first `FIT_ROWS` training rows taught (the number is kept in the data state), and shuffled in
the block order of data/orders.py, row groups being the shards. The held-out rows are the ones
the in-memory path holds out, so streaming a table or not trains on the same split.

Empty or unreadable cells outside the rows the encoding was fitted on are found when their row
group is read, and stop the run with a message naming the row.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from . import table_encoding
from .dataset import DataSpec, DataSplits
from .orders import shard_order
from .splits import split_arrays
from .streamed import StreamedSamples
from .table_files import Table, arrow_columns, parquet_files, read_table, table_header
from .tabular import feature_columns, targets_of

FIT_ROWS = 100_000  # training rows the encoding (means, stds, categories) is fitted on


@dataclass(frozen=True)
class RowGroup:
    file: Path
    number: int  # within its file
    start: int  # the table's row number of its first row


class ParquetRows:
    """Some rows of a table (`rows`: row numbers, ascending), read by row group and encoded, only
    these rows of each group; the row groups read last are kept, as many as a block of the
    shuffle spans."""

    def __init__(self, groups: list[RowGroup], total_rows: int, rows: np.ndarray, header: list[str],
                 encoding: list[dict], shuffle_buffer: int):
        self.groups, self.total_rows, self.rows, self.header = groups, total_rows, rows, header
        self.encoding, self.shuffle_buffer = encoding, shuffle_buffer
        self._starts = np.array([group.start for group in groups] + [total_rows])
        # The rows are ascending, so each group's are consecutive: positions [first[g], first[g + 1]).
        self._first = np.searchsorted(rows, self._starts)
        self.shard_sizes = np.diff(self._first).tolist()
        smallest = min((size for size in self.shard_sizes if size), default=1)
        self._kept_groups = -(-shuffle_buffer // smallest) + 2  # a block's groups, and the next
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()  # row group -> this set's rows, encoded
        self._read_by = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (len(table_encoding.feature_names(self.encoding)),)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, positions: list[int]) -> torch.Tensor:
        """The encoded rows at `positions` (of this set's rows), float32 (len(positions), features)."""
        positions = np.asarray(positions, dtype=np.int64)
        batch = np.empty((len(positions), *self.sample_shape), dtype=np.float32)
        groups = np.searchsorted(self._first, positions, side="right") - 1
        for group in np.unique(groups).tolist():
            chosen = groups == group
            batch[chosen] = self._encoded(group)[positions[chosen] - self._first[group]]
        return torch.from_numpy(batch)

    def _encoded(self, number: int) -> np.ndarray:
        if self._read_by != os.getpid():  # a forked worker: its own cache
            self._cache, self._read_by = OrderedDict(), os.getpid()
        if number in self._cache:
            self._cache.move_to_end(number)
            return self._cache[number]
        group = self.groups[number]
        mine = self.rows[self._first[number]:self._first[number + 1]] - group.start
        encoded = table_encoding.encode(read_row_group(group, self.header, self.encoding).take(mine), self.encoding)
        self._cache[number] = encoded
        if len(self._cache) > self._kept_groups:
            self._cache.popitem(last=False)
        return encoded

    def subset(self, start: int, length: int) -> ParquetRows:
        return ParquetRows(self.groups, self.total_rows, self.rows[start:start + length], self.header,
                           self.encoding, self.shuffle_buffer)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return shard_order(self.shard_sizes, seed, epoch, self.shuffle_buffer)


def row_groups(path: Path) -> tuple[list[RowGroup], int]:
    """Every row group of the table's files, in order, and the table's row count."""
    import pyarrow.parquet as parquet

    groups, start = [], 0
    for file in parquet_files(path):
        metadata = parquet.ParquetFile(file).metadata
        for number in range(metadata.num_row_groups):
            groups.append(RowGroup(file, number, start))
            start += metadata.row_group(number).num_rows
    return groups, start


def _arrow_group(group: RowGroup, columns: list[str]):
    import pyarrow.parquet as parquet

    try:
        return parquet.ParquetFile(group.file).read_row_group(group.number, columns=columns)
    except Exception as error:  # truncated or damaged since it was indexed
        raise UserError(f"data.path {_where(group)}: cannot read it ({type(error).__name__}: "
                        f"{str(error)[:160]})") from None


def _where(group: RowGroup) -> Path:
    """How a message names a row group (its rows then count from 1 within it)."""
    return Path(f"{group.file} (row group {group.number})")


def read_row_group(group: RowGroup, header: list[str], encoding: list[dict]) -> Table:
    """One row group's feature columns as `Table` columns; categories read as text, as they were fitted."""
    text = tuple(entry["name"] for entry in encoding if "categories" in entry)
    table = _arrow_group(group, [entry["name"] for entry in encoding])
    return Table(_where(group), header, arrow_columns(table, "data.path", _where(group), text), None)


def streamed_table(val_split: float, seed: int, path: str, target: str, features: tuple[str, ...] | None,
                   task: str, test_split: float, missing: str, id_column: str | None, task_from_head: bool,
                   shuffle_buffer: int, workers: int, columns: list[dict] | None, class_names: list[str] | None,
                   first_samples: int | None) -> DataSplits:
    """The splits of a Parquet table streamed from its row groups. `columns`, `class_names` and
    `first_samples` (the training rows the encoding was fitted on) are the stored data state
    when rebuilding for a checkpoint."""
    file = Path(path)
    chosen = feature_columns(file, "parquet", target, features, id_column)
    header = table_header(file, "parquet")
    y, class_names = targets_of(read_table(file, "parquet", "data.path", [target]), target, task, task_from_head,
                                class_names)
    groups, total = row_groups(file)
    held = split_arrays((np.arange(total), y), val_split, seed, test_split)
    in_order = {name: np.sort(index) for name, (index, _) in held.items()}  # storage order: sequential reads
    if columns is None:
        first_samples = min(FIT_ROWS, len(in_order["train"]))
        training = _read_rows(groups, in_order["train"][:first_samples], file, header, chosen)
        if missing == "error":
            table_encoding.refuse_missing(training, chosen, "feature")
        columns = table_encoding.fit(training, chosen, missing)
        table_encoding.warn_id_like(training, chosen)
    splits = {name: (StreamedSamples(ParquetRows(groups, total, rows, header, columns, shuffle_buffer), None, workers),
                     torch.from_numpy(y[rows])) for name, rows in in_order.items()}
    width = len(table_encoding.feature_names(columns))
    spec = DataSpec((width,), len(class_names) if class_names else None, tuple(class_names or ()))
    return DataSplits(spec, splits, {"columns": columns, "class_names": class_names, "first_samples": first_samples})


def _read_rows(groups: list[RowGroup], rows: np.ndarray, path: Path, header: list[str], names: list[str]) -> Table:
    """The `names` columns of `rows` (ascending row numbers), as read, not encoded: what the
    encoding is fitted on. Only the row groups holding them are read."""
    import pyarrow

    starts = np.array([group.start for group in groups])
    group_of = np.searchsorted(starts, rows, side="right") - 1
    parts = [_arrow_group(groups[number], names).take(rows[group_of == number] - groups[number].start)
             for number in np.unique(group_of).tolist()]
    return Table(path, header, arrow_columns(pyarrow.concat_tables(parts), "data.path", path), None)
