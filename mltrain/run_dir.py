"""The run directory: the one place a run writes to (config, metrics, summary, log, plots)."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import UserError


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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

    def write_config(self, text: str) -> None:
        write_atomically(self.path / "config.yaml", text)

    def log(self, line: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def append_step_record(self, record: dict[str, Any]) -> None:
        """A record taken within an epoch (log interval or extra validation): metrics.jsonl only."""
        with (self.path / "metrics.jsonl").open("a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One epoch's record: a line of metrics.jsonl and a row of metrics.csv."""
        self.records.append(record)
        self.append_step_record(record)
        columns: list[str] = []
        for row in self.records:
            columns += [key for key in row if key not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        write_atomically(self.path / "metrics.csv", buffer.getvalue())

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        write_atomically(self.path / name, json.dumps(data, indent=2) + "\n")
