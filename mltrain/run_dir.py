"""The run directory: the one place a run writes to (config, metrics, summary, log, plots)."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, TextIO

from .errors import TrainingFailed, UserError
from .position import Renumbering

# In every directory `mltrain fit` makes: it tells a run from any other folder, and the process
# writing the run holds an exclusive lock on it and writes its pid into it.
MARKER = ".mltrain-run"

# Every file and folder a run directory may hold (`*` stands for a name part); the run-directory
# reference is generated from it, and a test holds a real run's files to it.
RUN_FILES = {
    MARKER: "marks a directory `fit` made; the process writing the run holds a lock on it, with its pid inside",
    "config.yaml": "the resolved config, every default filled in; `mltrain fit config.yaml` trains the run again",
    "metrics.jsonl": "one JSON object per record: every epoch (`epoch`, `step`, `train/loss`, `train/accuracy`, "
                     "`val/...`, `lr`), every `train.log_every_steps` (`train/loss` so far in the epoch, `lr`, "
                     "`grad_norm`) and every extra validation (`train.val_every_steps`)",
    "metrics.csv": "the epoch records, one row per epoch",
    "summary.json": "`status` (running, completed, failed, interrupted, or a sink's own such as pruned), "
                    "`started_at`, `epochs_completed`, `steps`, `best` {`metric`, `value`, `epoch`}, `final` "
                    "metrics, `test` metrics of best.pt, `duration_s`, `train_samples_per_s`, `params`, "
                    "`bytes_per_process` (rank 0's `parameters`, `gradients`, `optimizer` state), `device`, `threads`, `processes`, `global_batch_size`, `versions`, and when they apply "
                    "`stopped_early`, `stopped` (why a sink stopped it) or `error`; written last, when everything "
                    "else is",
    "train.log": "every line `fit` printed",
    "checkpoints/last.pt": "written atomically after every epoch (and every `train.checkpoint_every_steps`); "
                           "`mltrain fit --resume` continues from it",
    "checkpoints/last-*/*": "`train.strategy: fsdp` with several processes: the training state instead of last.pt, "
                            "a torch.distributed.checkpoint directory (each process's shards of the weights, optimizer "
                            "state and EMA, its `.metadata`, and `trainer.pt`: the rest of last.pt), reached through the "
                            "link `checkpoints/last`, which moves to a new directory only once it is complete",
    "checkpoints/best.pt": "the weights at the best `train.monitor` so far; eval, predict and export use it",
    "plots/*.png": "one figure per metric by epoch with the best epoch marked, `lr.png` at every logged step, "
                   "and `confusion-<split>.png` from `mltrain eval`",
    "eval-*.json": "`mltrain eval`'s report of a split (the object `--json` prints)",
    "export/*": "`mltrain export`'s files (`best.onnx` and its sidecar `best.onnx.json`, `best.pt2`, "
                "`best.safetensors` and its sidecar `best.json`)",
    "tensorboard/*": "TensorBoard event files, with `output.loggers: [tensorboard]`",
    "mlflow.json": "the MLflow tracking URI, run id and last step sent, with `output.loggers: [mlflow]`",
}


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


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A write the disk refuses (full, read-only) ends the command with one line naming the file."""
    try:
        yield
    except OSError as error:
        raise TrainingFailed(f"could not write {path}: {error.strerror or error}; free disk space or fix "
                             "permissions (what was written before is intact)") from None


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    with _writing(path):
        fd, tmp_name = temporary_file(path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise


def _append_line(path: Path, line: str) -> None:
    with _writing(path), path.open("a", encoding="utf-8") as file:
        file.write(line + "\n")


def is_run_directory(path: Path) -> bool:
    """Whether `mltrain fit` made `path`: its marker, or a summary.json (runs from before the marker)."""
    return (path / MARKER).is_file() or (path / "summary.json").is_file()


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


# Lock descriptors this process holds. A forked child (a DataLoader worker) closes its copies at
# once: a flock lasts while any descriptor of it is open, and persistent workers outlive a run.
_HELD_LOCKS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCKS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class RunDir:
    """A run's directory. Made by `create` or opened by `reopen`, it is also the lock that keeps
    other processes from writing it until `release` (or `with run:` ends, or the process dies)."""

    def __init__(self, path: Path):
        self.path = path
        self.checkpoints = path / "checkpoints"
        self.plots = path / "plots"
        self.log_path = path / "train.log"
        self.metrics_path = path / "metrics.jsonl"
        self.records: list[dict[str, Any]] = []
        self._lock: int | None = None  # the marker's file descriptor while this process holds the lock
        self._metrics: TextIO | None = None  # metrics.jsonl, kept open for appending once written to

    @classmethod
    def create(cls, output_dir: str | Path, name: str, explicit: str | Path | None = None) -> RunDir:
        """`explicit` (--run-dir) is used as given, if it is not another run's directory;
        otherwise <output_dir>/<name>-<YYYYmmdd-HHMMSS>, suffixed -2, -3... if taken."""
        if explicit is not None:
            path = Path(explicit)
            if path.exists() and (not path.is_dir() or any(path.iterdir())):
                raise UserError(f"--run-dir {path} already exists and is not empty; it may hold another "
                                "run. Use `mltrain fit --resume` to continue a run, or pick a new directory")
            with contextlib.suppress(FileExistsError):  # another fit made it just now: the marker decides
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
        run._take_lock(new=True)
        run.checkpoints.mkdir(exist_ok=True)
        run.plots.mkdir(exist_ok=True)
        return run

    @classmethod
    def reopen(cls, path: Path) -> RunDir:
        """An existing run, to write into (resume, eval's report). Refused unless `mltrain fit` made
        it, nothing in it links outside it, and no other process writes it; the temporary files
        of a writer that was killed are removed."""
        if not is_run_directory(path):
            config = f": to train with its config.yaml, run `mltrain fit {path / 'config.yaml'}`" \
                if (path / "config.yaml").is_file() else ""
            raise UserError(f"{path} is not a run directory made by `mltrain fit` (it has no {MARKER} or "
                            f"summary.json), so mltrain does not write into it{config}")
        run = cls(path)
        run._refuse_outside_links()
        run._take_lock()
        run._remove_stale_files()
        return run

    def _take_lock(self, new: bool = False) -> None:
        """The exclusive lock on the marker (made here for a `new` run), with this process's pid
        written into it. The kernel drops the lock when the process ends, however it ends."""
        try:
            fd = os.open(self.path / MARKER, os.O_RDWR | os.O_CREAT | (os.O_EXCL if new else 0), 0o666)
        except FileExistsError:  # two fits given the same new --run-dir at once
            raise UserError(f"--run-dir {self.path} already holds another run; use `mltrain fit --resume` to "
                            "continue a run, or pick a new directory") from None
        except OSError as error:
            raise UserError(f"run directory {self.path} is not writable ({error.strerror}); mltrain writes "
                            "a run's files into it") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.path}: another mltrain process (pid {holder}) is writing this run; wait "
                            "for it to end or stop it, then try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd
        _HELD_LOCKS.add(fd)

    def release(self) -> None:
        """Lets other processes write the run again."""
        self._close_metrics()
        if self._lock is not None:
            _HELD_LOCKS.discard(self._lock)
            os.close(self._lock)  # closing the only descriptor releases the flock
            self._lock = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def _refuse_outside_links(self) -> None:
        """A checkpoint, a metrics file or a folder of the run that is a link to another place would
        have this run's writes land there (in another run's checkpoints, say)."""
        root = self.path.resolve()
        for directory in (self.path, self.checkpoints, self.plots):  # the top level first: a linked folder
            for entry in directory.iterdir() if directory.is_dir() else ():
                if entry.is_symlink() and not entry.resolve().is_relative_to(root):
                    raise UserError(f"{entry} is a link to {entry.resolve()}, outside the run directory "
                                    f"{self.path}; mltrain writes a run only inside its own directory: put a "
                                    "copy of the file in place of the link")

    def _remove_stale_files(self) -> None:
        """The hidden temporary files (.NAME.*.tmp) of atomic writes that a killed process left:
        with the lock held, no write of another process is in flight."""
        for directory in (self.path, self.checkpoints):
            for stale in directory.glob(".*.tmp"):
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink(missing_ok=True)

    def cut_back(self, step: int, renumbering: Renumbering | None = None) -> None:
        """Metrics cut back to what happened up to `step` (the checkpoint being resumed): later
        records and a half-written last line are dropped, so the files read as if the run had
        never stopped. With a `renumbering` (resumed with another number of processes) the cut is
        at its saved step and the records kept take the resumed run's step numbers."""
        cut = renumbering.saved_step if renumbering else step

        def renumbered(record: dict[str, Any]) -> dict[str, Any]:
            if renumbering is None:
                return record
            return {**record, "step": renumbering.step(record.get("epoch", 1), record["step"])}

        jsonl = self.metrics_path
        kept = []
        if jsonl.exists():
            for line in jsonl.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut short by a crash is always the last one
                line_step = record.get("step", 0) if isinstance(record, dict) else None
                if not isinstance(line_step, int) or line_step > cut:  # a later record, or not one of ours
                    break
                kept.append(to_json(renumbered(record)) + "\n" if renumbering else line + "\n")
        write_atomically(jsonl, "".join(kept))
        csv_path = self.path / "metrics.csv"
        if csv_path.exists():
            rows = read_epoch_rows(csv_path)
            self.records = [renumbered(row) for row in rows
                            if isinstance(row.get("step", 0), int) and row.get("step", 0) <= cut]
            self._write_csv()
        self.checkpoints.mkdir(exist_ok=True)
        self.plots.mkdir(exist_ok=True)

    def write_config(self, text: str) -> None:
        write_atomically(self.path / "config.yaml", text)

    def log(self, line: str) -> None:
        _append_line(self.log_path, line)

    def append_record(self, record: dict[str, Any]) -> None:
        """A line of metrics.jsonl, handed to the system at once, as a closed file's would be: a
        killed process loses none."""
        with _writing(self.metrics_path):
            metrics = self._open_metrics()
            try:
                metrics.write(to_json(record) + "\n")
                metrics.flush()
            except OSError:
                self._close_metrics()
                raise

    def _open_metrics(self) -> TextIO:
        """metrics.jsonl open for appending. It stays open (opening it costs more than a line) while
        it is in the run directory: once replaced or removed (a resume cuts it back by replacing it),
        whatever is there now is opened."""
        if self._metrics is not None and os.fstat(self._metrics.fileno()).st_nlink == 0:
            self._close_metrics()
        if self._metrics is None:
            self._metrics = self.metrics_path.open("a", encoding="utf-8")
        return self._metrics

    def _close_metrics(self) -> None:
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            with contextlib.suppress(OSError):  # a line the system refused was reported when written
                metrics.close()

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

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json, atomically; best effort when the run failed (the disk may be full)."""
        with contextlib.suppress(TrainingFailed) if summary["status"] == "failed" else contextlib.nullcontext():
            self.write_json("summary.json", summary)

    def read_summary(self) -> dict[str, Any]:
        """summary.json as an earlier attempt left it; empty if there is none (or it is unreadable)."""
        try:
            summary = json.loads((self.path / "summary.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return summary if isinstance(summary, dict) else {}
