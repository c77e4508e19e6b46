"""The checkpoint: a self-describing dict, written atomically, loaded without running code.
`state.TrainState` builds it and reads it back; this module writes, loads and upgrades the file.

Its entries are listed in ENTRIES below.

Version 1 had no spec, and instead of position a `progress` dict (epoch_step, epochs_completed,
samples_seen, epoch_seconds, train_seconds, elapsed_s, stopped_early) beside epoch and step;
`load_checkpoint` gives it in the version-2 layout with spec None."""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import DataSpec
from .errors import TrainingFailed, UserError
from .run_dir import is_run_directory, temporary_file

# An fsdp run's training state: checkpoints/last -> last-N/, its shards and trainer.pt, the rest
# of the checkpoint (see sharded_checkpoint).
SHARDED_LINK = "last"
SHARDED_TRAINER = "trainer.pt"
SHARDED_VERSION = re.compile(r"^last-(\d+)$")  # the directories the link points to

FORMAT = "mltrain-checkpoint"
FORMAT_VERSION = 2

# Every entry of a version-2 checkpoint and what it holds; the checkpoint reference is generated
# from it, and a test holds it to the keys of a real checkpoint.
ENTRIES = {
    "format": f"`{FORMAT}`: what the file is",
    "format_version": f"{FORMAT_VERSION}; a newer version is refused with the version this mltrain reads",
    "model": "the model's weights (plain parameter names, also after `train.compile`)",
    "backbone": "the names of the parameters `model.weights` set when the run started (`train.freeze: [backbone]`)",
    "optimizer": "the optimizer's state: moments and settings of every parameter group",
    "scaler": "the fp16 loss scaler's state (empty otherwise)",
    "ema": "the averaged weights and how many steps they average (`train.ema`; null otherwise)",
    "scheduler": "the plateau and warmup state; the schedule itself is replayed to the position's step",
    "monitor": "the best value of `train.monitor` so far and the early-stopping count",
    "epoch_totals": "the running sums of the epoch in progress (rank 0's)",
    "position": "where the run stands: step, epoch, epoch_step, epochs_completed, samples_seen, "
                "epoch_seconds, train_seconds, elapsed_s, started_at, stopped",
    "epoch": "the position's epoch, for readers",
    "step": "the position's optimizer step, for readers",
    "config": "the resolved config, as plain data",
    "spec": "what the model reads and predicts: sample_shape, num_classes, class_names, target_shape",
    "data_state": "the data's encoding: vocabulary, normalisation statistics, the CSV column encoding",
    "model_files": "what the model was built from besides its config keys: a Hugging Face model's `config.json` "
                   "(as text); null for the others",
    "metrics": "the last epoch's record",
    "rng": "rank 0's random states: torch, CUDA, NumPy, Python",
    "per_process": "each process's random states, augmentation state, running sums and data-stream state, "
                   "in rank order",
    "world_size": "the number of processes that trained it",
    "versions": "python, torch and mltrain versions that wrote it",
}


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the rename is still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write to a temporary file in the same directory, fsync, rename over `path`, fsync the
    directory: a crash at any instant leaves either the old file or the new one, never half."""
    tmp_name = None
    try:
        fd, tmp_name = temporary_file(path)
        with os.fdopen(fd, "wb") as file:
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        if tmp_name:
            Path(tmp_name).unlink(missing_ok=True)
        refused = _os_error(error)
        if refused is None:
            raise
        kept = "the previous one is intact" if path.exists() else "no earlier one existed"
        raise TrainingFailed(f"could not write checkpoint {path}: {refused.strerror or refused}; {kept}. "
                             "Free disk space or fix permissions, then continue with "
                             f"`mltrain fit --resume {path.parent.parent}`") from None
    _fsync_directory(path.parent)


def _os_error(error: BaseException) -> OSError | None:
    """The disk's refusal behind a failed write: torch.save reports a full disk as a RuntimeError
    raised while handling the file's OSError."""
    if isinstance(error, RuntimeError) and isinstance(error.__context__, OSError):
        return error.__context__
    return error if isinstance(error, OSError) else None


def run_directory_of(checkpoint_path: Path) -> Path | None:
    """The run directory a checkpoint lives in (<run>/checkpoints/x.pt), if `mltrain fit` made it:
    where the checkpoint is listed, not where a link may lead."""
    directory = Path(os.path.abspath(checkpoint_path)).parent
    if checkpoint_path.name == SHARDED_TRAINER and (directory.name == SHARDED_LINK
                                                     or SHARDED_VERSION.match(directory.name)):
        directory = directory.parent  # <run>/checkpoints/last/trainer.pt
    run = directory.parent
    return run if directory.name == "checkpoints" and is_run_directory(run) else None


def sharded_directories(checkpoints: Path) -> dict[int, Path]:
    """An fsdp run's training-state directories in `checkpoints` (last-N/), by N."""
    return {int(match[1]): path for path in checkpoints.glob(f"{SHARDED_LINK}-*")
            if (match := SHARDED_VERSION.match(path.name)) and path.is_dir() and not path.is_symlink()}


def remove_sharded_training_state(checkpoints: Path) -> None:
    """An fsdp run's sharded training state (the link, then its directories), once a newer last.pt
    stands in for it."""
    link = checkpoints / SHARDED_LINK
    if link.is_symlink():
        link.unlink()
    for directory in sharded_directories(checkpoints).values():
        shutil.rmtree(directory, ignore_errors=True)


def training_state_file(checkpoints: Path) -> Path | None:
    """The newest checkpoint a resume continues from: last.pt, or an fsdp run's last/trainer.pt."""
    found = [path for path in (checkpoints / "last.pt", checkpoints / SHARDED_LINK / SHARDED_TRAINER)
             if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def resolve_checkpoint(target: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt")) -> Path:
    """A run directory means the first of `prefer` in its checkpoints/; a file means itself."""
    target = Path(target)
    if target.is_dir() and (target / SHARDED_TRAINER).is_file():  # <run>/checkpoints/last: an fsdp run's state
        return target / SHARDED_TRAINER
    if target.is_dir():
        for name in prefer:
            candidate = target / "checkpoints" / name
            if name == "last.pt":
                candidate = training_state_file(target / "checkpoints") or candidate
            if candidate.is_file():
                return candidate
        raise UserError(f"{target}: no checkpoints/{' or checkpoints/'.join(prefer)} in this directory; "
                        "pass a run directory written by `mltrain fit` or a .pt file")
    if not target.exists():
        raise UserError(f"{target}: no such file or directory; pass a run directory or a .pt checkpoint")
    return target


class Unloadable(Exception):
    """A file torch.load(weights_only=True) refused: `code` names what it would have run (a global
    such as posix.mkdir), or is None for bytes torch did not write (truncated, corrupt, not torch's)."""

    def __init__(self, code: str | None, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


def load_safely(path: Path) -> Any:
    """torch.load with weights_only=True, on the CPU: tensors and plain data, never code. Raises
    Unloadable; the caller says what the file should have been."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on the pickle protocol of a file it then refuses
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # whatever the weights-only unpickler trips over in bytes torch did not write
        named = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        raise Unloadable(named[1] if named else None, _what_torch_saw(error)) from None


def load_checkpoint(target: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt")) -> tuple[dict, Path]:
    """Load with weights_only=True (no code can run from the file) and check it is ours."""
    path = resolve_checkpoint(target, prefer)
    try:
        checkpoint = load_safely(path)
    except Unloadable as refused:
        if refused.code:
            raise UserError(f"{path}: refused to load: it names {refused.code}, which is neither a tensor nor plain "
                            "data, so loading it could run code; pass a checkpoint written by `mltrain fit`") from None
        raise UserError(f"{path}: not a checkpoint (truncated, corrupt or not a file torch.save wrote)"
                        f"{refused.detail}; pass a checkpoint written by `mltrain fit`") from None
    return checked_checkpoint(checkpoint, path), path


def checked_checkpoint(checkpoint: Any, path: Path) -> dict:
    """A loaded file, held to being an mltrain checkpoint of a version this mltrain reads, in the
    current layout."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not an mltrain checkpoint (no '{FORMAT}' marker); "
                        "pass a checkpoint written by `mltrain fit`")
    version = checkpoint.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UserError(f"{path}: checkpoint format version {version!r} is not one mltrain wrote; "
                        "pass a checkpoint written by `mltrain fit`")
    if version > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format version {version} is newer than this mltrain reads "
                        f"({FORMAT_VERSION}); upgrade mltrain")
    return _from_version_1(checkpoint) if version == 1 else checkpoint


def _what_torch_saw(error: Exception) -> str:
    """torch's first sentence about a file it could not read, where it says something about the
    file (its zip reader, the disk); never its advice to load with weights_only=False."""
    first = str(error).splitlines()[0].split(". ")[0] if str(error) else ""
    said = isinstance(error, (RuntimeError, OSError, zipfile.BadZipFile)) and first and "weights_only" not in first
    return f": {first}" if said else ""


def _from_version_1(checkpoint: dict) -> dict:
    """A version-1 checkpoint in the current layout: its position gathered, no spec."""
    upgraded = {key: value for key, value in checkpoint.items() if key != "progress"}
    progress = checkpoint.get("progress")
    if isinstance(progress, dict):
        upgraded["position"] = {
            "step": checkpoint.get("step"), "epoch": checkpoint.get("epoch"), "started_at": None,
            "stopped": progress.get("stopped_early"),
            **{key: progress.get(key) for key in ("epoch_step", "epochs_completed", "samples_seen", "epoch_seconds",
                                                  "train_seconds", "elapsed_s")}}
    upgraded["spec"] = None
    return upgraded


def spec_state(spec: DataSpec) -> dict[str, Any]:
    """The data spec as plain data for the checkpoint."""
    return {"sample_shape": list(spec.sample_shape), "num_classes": spec.num_classes,
            "class_names": list(spec.class_names), "target_shape": list(spec.target_shape)}


MAX_SAMPLE_VALUES = 1 << 26  # values in one stored sample or target (a 4096x4096 RGBA image has 1 << 26)


def spec_from_state(state: Any, path: Path) -> DataSpec:
    """The data spec a checkpoint stored, checked: a model is built from it before any data is read,
    so an edited shape must not ask for more memory than any real sample."""
    def shape(value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                                                         for n in value)

    fits = isinstance(state, dict) and shape(state.get("sample_shape")) and shape(state.get("target_shape", ())) \
        and (state.get("num_classes") is None or isinstance(state["num_classes"], int)
             and not isinstance(state["num_classes"], bool) and state["num_classes"] > 0) \
        and isinstance(state.get("class_names", ()), (list, tuple)) \
        and all(isinstance(name, str) for name in state.get("class_names", ()))
    if not fits:
        raise UserError(f"{path}: its data spec (sample_shape, num_classes, class_names, target_shape) is "
                        "damaged; pass a checkpoint written by `mltrain fit`")
    for key in ("sample_shape", "target_shape"):
        if math.prod(state.get(key, ())) > MAX_SAMPLE_VALUES:
            raise UserError(f"{path}: its data spec's {key} {list(state[key])} holds more than {MAX_SAMPLE_VALUES:,} "
                            "values per sample, more than any real one; the file is damaged or was edited")
    if state["num_classes"] is not None and state["num_classes"] > MAX_SAMPLE_VALUES:
        raise UserError(f"{path}: its data spec's num_classes {state['num_classes']:,} is more than "
                        f"{MAX_SAMPLE_VALUES:,}; the file is damaged or was edited")
    return DataSpec(tuple(state["sample_shape"]), state["num_classes"], tuple(state.get("class_names", ())),
                    tuple(state.get("target_shape", ())))


def capture_rng() -> dict[str, Any]:
    """Every RNG state a run draws from, as tensors and plain data (weights_only-loadable)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
