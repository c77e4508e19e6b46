"""Tables read into columns: a CSV file (Python's csv module, no extra package) or Parquet files
(pyarrow, reading only the columns asked for). Both give the same `Table`: each column numeric
(float64, NaN where a cell is empty) or text (a code per row into its distinct texts, -1 where a
cell is empty: a million rows of a few categories hold no million strings), so one encoder
(`table_encoding`) serves both and a table gives the same numbers from either format.
"""

from __future__ import annotations

import csv as csv_module
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..registry import did_you_mean
from .files import regular_file

PARQUET_PIP = 'pip install "mltrain[parquet]"'


@dataclass
class Column:
    numbers: np.ndarray | None = None  # a numeric column: float64, NaN for an empty cell
    codes: np.ndarray | None = None  # a text column: each row's index into levels, -1 for an empty cell
    levels: np.ndarray | None = None  # a text column's distinct texts

    @classmethod
    def of_texts(cls, cells: np.ndarray) -> Column:
        """A text column from its cells ("" for an empty one)."""
        levels, codes = np.unique(cells.astype(object).astype(str), return_inverse=True)
        codes = codes.astype(np.int64)
        if len(levels) and levels[0] == "":  # sorted first
            codes, levels = codes - 1, levels[1:]
        return cls(codes=codes, levels=levels.astype(object))

    @property
    def numeric(self) -> bool:
        return self.numbers is not None

    @property
    def rows(self) -> int:
        return len(self.numbers if self.numeric else self.codes)

    @property
    def missing(self) -> np.ndarray:
        return np.isnan(self.numbers) if self.numeric else self.codes < 0

    def take(self, rows: np.ndarray) -> Column:
        if self.numeric:
            return Column(numbers=self.numbers[rows])
        return Column(codes=self.codes[rows], levels=self.levels)

    def text_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, levels) as a text column has them; a numeric column's numbers written as text
        (3, not 3.0), for one read as categories or class labels."""
        if not self.numeric:
            return self.codes, self.levels
        present = ~np.isnan(self.numbers)
        distinct, inverse = np.unique(self.numbers[present], return_inverse=True)
        codes = np.full(len(self.numbers), -1, dtype=np.int64)
        codes[present] = inverse
        return codes, np.array([number_as_text(value) for value in distinct], dtype=object)

    def texts(self) -> np.ndarray:
        """Every row as text ("" for an empty cell)."""
        codes, levels = self.text_codes()
        return np.where(codes >= 0, np.append(levels, "")[codes], "").astype(object)


def number_as_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Table:
    path: Path
    header: list[str]  # every column of the file, in order (only some may be read)
    columns: dict[str, Column]  # the columns read
    lines: np.ndarray | None  # a CSV row's line in the file; None for Parquet (rows count from 1)
    numbers: np.ndarray | None = None  # Parquet rows read out of order: each row's number (from 1)

    @property
    def rows(self) -> int:
        return next(iter(self.columns.values())).rows if self.columns else 0

    def where(self, row: int) -> str:
        """How a message names a row: file:line (CSV) or file row N (Parquet)."""
        if self.lines is not None:
            return f"{self.path}:{self.lines[row]}"
        return f"{self.path} row {self.numbers[row] if self.numbers is not None else row + 1}"

    def column(self, name: str, key: str) -> Column:
        if name not in self.columns:
            raise UserError(f"{key} '{name}': {self.path} has no such column; {did_you_mean(name, self.header)}"
                            f"columns: {', '.join(self.header)}")
        return self.columns[name]

    def take(self, rows: np.ndarray) -> Table:
        numbers = self.numbers[rows] if self.numbers is not None else None if self.lines is not None else rows + 1
        return Table(self.path, self.header, {name: column.take(rows) for name, column in self.columns.items()},
                     self.lines[rows] if self.lines is not None else None, numbers)


def table_format(path: Path) -> str:
    """csv or parquet, by the name: a .parquet file or a folder is Parquet."""
    return "parquet" if path.suffix.lower() == ".parquet" or path.is_dir() else "csv"


def table_header(path: Path, format: str, key: str = "data.path") -> list[str]:
    """The column names, without reading the rows (a CSV's first line, a Parquet schema)."""
    if format == "parquet":
        parquet = _pyarrow(path, key)[2]
        try:
            return list(parquet.ParquetDataset(path).schema.names)
        except Exception as error:  # not Parquet, truncated, unreadable
            raise _unreadable_parquet(path, key, error) from None
    regular_file(path, key, "a CSV file with a header row")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [name.strip() for name in next(csv_module.reader(handle), [])]
    except UnicodeDecodeError as error:
        raise UserError(f"{key} {path}: not UTF-8 text (invalid byte at offset {error.start}); convert it to UTF-8 "
                        "first, or give a .parquet file with data.dataset: parquet") from None
    except (OSError, csv_module.Error) as error:
        raise UserError(f"{key} {path}: cannot read it as CSV ({type(error).__name__})") from None


def read_table(path: Path, format: str, key: str = "data.path", wanted: list[str] | None = None,
               text: tuple[str, ...] = ()) -> Table:
    """The rows of the table at `path` (`format`: csv or parquet): the `wanted` columns (all when
    None), which the caller has checked exist. The `text` columns are read as the file writes them,
    numbers or not (an ID, or categories such as zip codes 02139)."""
    return _parquet(path, key, wanted, text) if format == "parquet" else _csv(path, key, wanted, text)


def _csv(file: Path, key: str, wanted: list[str] | None, text: tuple[str, ...]) -> Table:
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
                rows.append(row)
                lines.append(reader.line_num)
    except UnicodeDecodeError as error:
        raise UserError(f"{key} {file}: not UTF-8 text (invalid byte at offset {error.start}); convert it to UTF-8 "
                        "first, or give a .parquet file") from None
    except (OSError, csv_module.Error) as error:
        problem = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise UserError(f"{key} {file}: cannot read it as CSV ({problem}); give a comma-separated UTF-8 "
                        "file with a header row") from None
    if header is None or not rows:
        raise UserError(f"{key} {file}: no data rows; give a header row and at least one row of values")
    header = [name.strip() for name in header]
    _refuse_repeated(header, file, key)
    columns = {}
    for index, name in enumerate(header):
        if wanted is None or name in wanted:  # one object array a column: each cell's own string, no padding
            cells = np.array([row[index].strip() for row in rows], dtype=object)
            columns[name] = Column.of_texts(cells) if name in text else cell_column(cells)
    return Table(file, header, columns, np.array(lines))


def cell_column(cells: np.ndarray) -> Column:
    """A column of text cells: numeric when every non-empty cell is a number (an empty cell, or
    nan, is missing); else text."""
    try:
        return Column(numbers=np.where(cells == "", "nan", cells).astype(np.float64))
    except ValueError:
        return Column.of_texts(cells)


def _refuse_repeated(header: list[str], file: Path, key: str) -> None:
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{key} {file}: column name{'s' if len(repeated) > 1 else ''} "
                        f"{', '.join(repr(name) for name in repeated)} appear more than once in the header; "
                        "give every column its own name")


def _pyarrow(path: Path, key: str):
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise UserError(f"{key} {path}: reading Parquet needs pyarrow; {PARQUET_PIP}") from None
    return pyarrow, pyarrow.compute, pyarrow.parquet


def _unreadable_parquet(path: Path, key: str, error: Exception) -> UserError:
    if not path.exists():
        return UserError(f"{key} {path}: no such file or folder; give a .parquet file or a folder of them")
    detail = str(error).splitlines()[0][:160] if str(error) else ""
    return UserError(f"{key} {path}: cannot read it as Parquet ({type(error).__name__}: {detail})")


def _parquet(path: Path, key: str, wanted: list[str] | None, text: tuple[str, ...]) -> Table:
    parquet = _pyarrow(path, key)[2]
    try:
        dataset = parquet.ParquetDataset(path)
        table = dataset.read(columns=wanted)
    except Exception as error:  # not Parquet, truncated, unreadable
        raise _unreadable_parquet(path, key, error) from None
    if table.num_rows == 0:
        raise UserError(f"{key} {path}: no rows; give a table with at least one row")
    return Table(path, list(dataset.schema.names), arrow_columns(table, key, path, text), None)


def parquet_files(path: Path, key: str = "data.path") -> list[Path]:
    """The files of a Parquet table (a file, or a folder of them), in the order its rows are read."""
    parquet = _pyarrow(path, key)[2]
    try:
        return [Path(file) for file in parquet.ParquetDataset(path).files]
    except Exception as error:  # not Parquet, truncated, unreadable
        raise _unreadable_parquet(path, key, error) from None


def _without_empty_text(codes: np.ndarray, levels: np.ndarray) -> Column:
    """A text column whose level "" (an empty cell, as a CSV has it) is an empty cell."""
    empty = np.flatnonzero(levels == "")
    if len(empty):
        codes = np.where(codes == empty[0], -1, codes - (codes > empty[0]))
        levels = np.delete(levels, empty[0])
    return Column(codes=codes, levels=levels)


def _numbers_if_all_are(column: Column) -> Column:
    """A text column whose every value is a number read as numbers, as a CSV column would be."""
    try:
        values = np.array([float(level) for level in column.levels] + [np.nan], dtype=np.float64)
    except ValueError:
        return column
    return Column(numbers=values[column.codes])  # code -1 (empty) takes the appended NaN


def arrow_columns(table, key: str, path: Path, text: tuple[str, ...] = ()) -> dict[str, Column]:
    """An Arrow table's columns as `Column`s, typed as a CSV's would be: numbers (integers, floats,
    decimals, and text columns whose every value is a number) as float64 with NaN for nulls; other
    text and booleans (True, False, as a CSV writes them) as text. The `text` columns stay text."""
    pa, compute, _ = _pyarrow(path, key)
    columns = {}
    for name in table.column_names:
        data = table.column(name)
        kind = data.type
        if pa.types.is_dictionary(kind):
            data, kind = data.cast(kind.value_type), kind.value_type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
        if numeric and name not in text:
            floats = compute.cast(data, pa.float64(), safe=False)  # IDs past 2**53 round, as a CSV's would
            columns[name] = Column(numbers=floats.to_numpy(zero_copy_only=False))
        elif numeric or pa.types.is_boolean(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
            if pa.types.is_boolean(kind):
                data = compute.if_else(data, "True", "False")
            encoded = compute.utf8_trim_whitespace(compute.cast(data, pa.string())).combine_chunks().dictionary_encode()
            codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            levels = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
            column = _without_empty_text(codes, levels)
            columns[name] = column if name in text else _numbers_if_all_are(column)
        else:
            raise UserError(f"{key} {path}: column '{name}' holds {kind}, which is neither numbers nor text; leave it "
                            "out, or convert it")
    return columns
