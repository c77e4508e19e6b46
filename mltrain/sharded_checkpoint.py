"""The training state of an fsdp run as a torch.distributed.checkpoint directory: every process
writes its own shards of the weights, the optimizer state and the averaged weights, and rank 0
the rest of the checkpoint beside them (`trainer.pt`: plain data, the layout of last.pt without
those tensors).

`checkpoints/last` is a link to the newest complete directory (`last-N`), replaced by one atomic
rename once every shard and trainer.pt are on disk: a save killed at any instant leaves the
previous directory whole and linked.

torch.distributed.checkpoint reads its metadata and non-tensor entries with an unrestricted
unpickler; here both are read with one that accepts the checkpoint's own metadata classes and
plain data only, so a directory someone hands you cannot run code when it is resumed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata

from .checkpoint import SHARDED_LINK as LINK
from .checkpoint import SHARDED_TRAINER as TRAINER_FILE
from .checkpoint import _fsync_directory, save_checkpoint, sharded_directories
from .distributed import Distributed
from .errors import TrainingFailed, UserError


# The globals a torch.distributed.checkpoint .metadata file names, each by module and name (a
# dotted name would reach through a module's attributes: os.system from its imports): its own
# dataclasses and enums, shapes, dtypes (checked apart) and layouts, and the path it was written to.
_METADATA = "torch.distributed.checkpoint.metadata"
_FILESYSTEM = "torch.distributed.checkpoint.filesystem"
_METADATA_GLOBALS = {
    *((_METADATA, name) for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                                     "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                                     "_MEM_FORMAT_ENCODING")),
    (_FILESYSTEM, "_StorageInfo"), (_FILESYSTEM, "_StoragePrefix"), (_FILESYSTEM, "SerializationFormat"),
    ("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath")}


def save(shards: dict[str, Any], trainer: dict | None, checkpoints: Path, job: Distributed) -> None:
    """Write `shards` (state dicts of DTensors: each process its own) and rank 0's `trainer`
    into a new directory, then point checkpoints/last at it and remove the older ones."""
    name = job.broadcast(_next_name(checkpoints) if job.is_main else None)
    directory = checkpoints / name
    try:
        dcp.save(shards, storage_writer=FileSystemWriter(directory, sync_files=True))
    except CheckpointException as error:
        if job.is_main:
            shutil.rmtree(directory, ignore_errors=True)  # the incomplete save, never linked
        refused = _disk_error(error)
        if refused is None:
            raise  # a process lost mid-save: the job's own failure says which
        raise TrainingFailed(f"could not write the sharded checkpoint {directory}: {refused.strerror or refused}; the "
                             f"previous one is intact. Free disk space or fix permissions, then continue with "
                             f"`mltrain fit --resume {checkpoints.parent}`") from None
    if job.is_main:
        try:
            save_checkpoint(trainer, directory / TRAINER_FILE)
        except TrainingFailed:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        _fsync_directory(directory)
        _point_link(checkpoints, name)
        (checkpoints / "last.pt").unlink(missing_ok=True)  # from before a resume under fsdp: older
        for stale in sharded_directories(checkpoints).values():
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)


def load(shards: dict[str, Any], directory: Path) -> None:
    """Fill `shards` (state dicts as this job holds them: sharded, or whole for one process) in
    place from `directory`, resharded if it was written by another number of processes."""
    reader, planner = _PlainDataReader(directory), _PlainDataPlanner()
    try:
        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")  # its note that one process without a process group reads alone
            dcp.load(shards, storage_reader=reader, planner=planner)
    except (Exception, CheckpointException) as error:  # noqa: BLE001 - whatever the reader trips over
        refused = reader.refused or planner.refused
        if refused is not None:
            raise UserError(f"{directory}: refused to load: {refused}; resume a run written by `mltrain fit`") \
                from None
        cause = next(iter(error.failures.values()))[0] if isinstance(error, CheckpointException) else error
        raise UserError(f"{directory}: the sharded training state does not load: {_first_line(cause)}; the "
                        "directory is damaged or belongs to another model") from None


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Without torch.distributed.checkpoint's tracebacks (logged to the root logger) of a reader
    error that `load` reports in one line."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def stored_values(directory: Path, entry: str = "model") -> int:
    """How many values the tensors of `entry` (the weights) hold in the checkpoint at
    `directory`, from its metadata alone; UserError when it does not read."""
    reader = _PlainDataReader(directory)
    try:
        metadata = reader.read_metadata()
        return sum(math.prod(item.size) for name, item in metadata.state_dict_metadata.items()
                   if name.startswith(f"{entry}.") and isinstance(item, TensorStorageMetadata))
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
        raise UserError(f"{directory}: {reader.refused or 'its metadata does not read: ' + _first_line(error)}; "
                        "resume a run written by `mltrain fit`") from None


def _next_name(checkpoints: Path) -> str:
    return f"{LINK}-{max(sharded_directories(checkpoints), default=0) + 1}"


def _point_link(checkpoints: Path, name: str) -> None:
    """checkpoints/last -> name, in one rename (a relative link: the run directory can move)."""
    staged = checkpoints / f".{LINK}-link-{os.getpid()}"
    staged.unlink(missing_ok=True)
    os.symlink(name, staged)
    os.replace(staged, checkpoints / LINK)
    _fsync_directory(checkpoints)


def _disk_error(error: CheckpointException) -> OSError | None:
    """The disk's refusal among the processes' failures (each an exception and its traceback)."""
    found = [failure[0] for failure in error.failures.values() if isinstance(failure[0], OSError)]
    return found[0] if found else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _build_instances_only(unpickler: pickle._Unpickler) -> None:
    """BUILD (set an object's state) on instances only: on a class it would rewrite the class for
    the rest of the process (a Path whose `/` lies)."""
    if isinstance(unpickler.stack[-2], type):
        raise pickle.UnpicklingError("its metadata sets the attributes of a class")
    pickle._Unpickler.load_build(unpickler)


class _MetadataUnpickler(pickle._Unpickler):
    """Python's own unpickler (whose opcodes can be overridden), restricted to the globals the
    checkpoint format names and to setting the state of instances."""

    dispatch = {**pickle._Unpickler.dispatch, pickle.BUILD[0]: _build_instances_only}

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _METADATA_GLOBALS \
            or module == "torch" and name.isidentifier() and isinstance(getattr(torch, name, None), torch.dtype)
        if not allowed:
            raise pickle.UnpicklingError(f"its metadata names {module}.{name}, which is neither a tensor nor plain "
                                         "data, so loading it could run code")
        return super().find_class(module, name)


class _PlainDataReader(FileSystemReader):
    """`refused`: what the metadata named that is not allowed (torch.distributed.checkpoint
    reports the reader's errors as text only)."""

    refused: str | None = None

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        with open(self._get_metadata_path(kwargs.get("rank")), "rb") as file:
            try:
                metadata = _MetadataUnpickler(file).load()
            except pickle.UnpicklingError as error:
                self.refused = str(error)
                raise
        files = [getattr(info, "relative_path", None) for info in (getattr(metadata, "storage_data", None) or {}).values()]
        if not isinstance(metadata, Metadata) or not all(isinstance(name, str) and name == Path(name).name
                                                         and name not in ("", ".", "..") for name in files):
            self.refused = "its metadata is not a checkpoint's, or names files outside its directory"
            raise pickle.UnpicklingError(self.refused)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _PlainDataPlanner(DefaultLoadPlanner):
    """Non-tensor entries (an optimizer's settings) with torch.load(weights_only=True)."""

    refused: str | None = None

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError:
            self.refused = (f"its entry {read_item.dest_index.fqn} names a global, which is neither a tensor nor plain "
                            "data, so loading it could run code")
            raise
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded
