"""The run directory: the one place a run writes to (config, metrics, summary, log, plots)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import UserError


def json_safe(data: Any) -> Any:
    """NaN and inf (a diverged loss, a best value not yet seen) become null: valid JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def to_json(data: Any, indent: int | None = None) -> str:
    return json.dumps(json_safe(data), indent=indent, allow_nan=False)


def temporary_file(path: Path) -> tuple[int, str]:
    """A temporary file beside `path`, with the permissions a plain open() would give it
    (mkstemp makes it private)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp_name


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    fd, tmp_name = temporary_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _make_directory(path: Path) -> None:
    try:
        path.mkdir(parents=True)
    except PermissionError:
        raise UserError(f"cannot create run directory {path}: permission denied; "
                        "choose a writable output.dir or --run-dir") from None
    except OSError as error:
        if isinstance(error, FileExistsError):
            raise
        raise UserError(f"cannot create run directory {path}: {error.strerror}; "
                        "choose a writable output.dir or --run-dir") from None


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    """A metrics.csv row back to numbers (empty cells dropped)."""
    parsed: dict[str, Any] = {}
    for key, text in row.items():
        if text in ("", None):
            continue
        try:
            parsed[key] = int(text) if key in ("epoch", "step") else float(text)
        except ValueError:
            parsed[key] = text
    return parsed


def read_epoch_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.csv: one record per epoch, numbers parsed back."""
    return list(map(_parse_row, csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")))))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order; a line that is not a JSON object (cut short by a
    crash) is skipped. An unreadable file is a UserError naming it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.plots = path / "plots"
        self.log_path = path / "train.log"
        self.records: list[dict[str, Any]] = []

    @classmethod
    def create(cls, output_dir: str | Path, name: str, explicit: str | Path | None = None) -> RunDir:
        """`explicit` (--run-dir) is used as given, if it is not another run's directory;
        otherwise <output_dir>/<name>-<YYYYmmdd-HHMMSS>, suffixed -2, -3... if taken."""
        if explicit is not None:
            path = Path(explicit)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise UserError(f"--run-dir {path} already exists and is not empty; it may hold another "
                                "run. Use `mltrain fit --resume` to continue a run, or pick a new directory")
            if not path.exists():
                _make_directory(path)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            base = Path(output_dir) / f"{name}-{stamp}"
            path, attempt = base, 1
            while True:
                try:
                    _make_directory(path)
                    break
                except FileExistsError:
                    attempt += 1
                    path = base.with_name(f"{base.name}-{attempt}")
        if not os.access(path, os.W_OK):
            raise UserError(f"run directory {path} is not writable; choose a writable output.dir or --run-dir")
        run = cls(path)
        run.checkpoints.mkdir(exist_ok=True)
        run.plots.mkdir(exist_ok=True)
        return run

    def cut_back(self, step: int) -> None:
        """Metrics cut back to what happened up to `step` (the checkpoint being resumed): later
        records and a half-written last line are dropped, so the files read as if the run had
        never stopped."""
        run, path = self, self.path
        jsonl = path / "metrics.jsonl"
        kept = []
        if jsonl.exists():
            for line in jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a crash is always the last one
                if record.get("step", 0) > step:
                    break
                kept.append(line + "\n")
        write_atomically(jsonl, "".join(kept))
        csv_path = path / "metrics.csv"
        if csv_path.exists():
            run.records = [row for row in read_epoch_rows(csv_path) if row.get("step", 0) <= step]
            run._write_csv()
        run.checkpoints.mkdir(exist_ok=True)
        run.plots.mkdir(exist_ok=True)

    def write_config(self, text: str) -> None:
        write_atomically(self.path / "config.yaml", text)

    def log(self, line: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def append_record(self, record: dict[str, Any]) -> None:
        """A line of metrics.jsonl."""
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as file:
            file.write(to_json(record) + "\n")

    def add_epoch_row(self, record: dict[str, Any]) -> None:
        """An epoch's record as a row of metrics.csv."""
        self.records.append(record)
        self._write_csv()

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.records:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        write_atomically(self.path / "metrics.csv", buffer.getvalue())

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_atomically(self.path / name, to_json(data, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        """summary.json as an earlier attempt left it; empty if there is none (or it is unreadable)."""
        try:
            summary = json.loads((self.path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return summary if isinstance(summary, dict) else {}
