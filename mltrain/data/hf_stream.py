"""Hugging Face datasets streamed (`dataset: hf` with `data.streaming: true`): the train split is
read with `load_dataset(..., streaming=True)` (a `save_to_disk` folder through
`to_iterable_dataset`) and never held whole: Parquet, Arrow, JSON lines, CSV or WebDataset
files, local or on the hub.

The datasets library shuffles (a seeded shard order and a buffer of `data.shuffle_buffer`
examples, reseeded each pass with `set_epoch`) and shares the shards out between processes
(`split_dataset_by_node`). Its stream has no length, so the run's length is `train.max_steps`
and training goes round the data in passes. The first `HEAD` examples (in storage order) teach
what the in-memory path learns from the whole split: the class names (unless the target is a
ClassLabel), the image statistics, a table's encoding. The val and test splits are the
dataset's own (a stream has no fraction to hold out), read into memory.

Resume: the checkpoint keeps the library's `state_dict()` of each process's stream. The library
does not keep its shuffle buffer's content, so a resumed run refills the buffer from where the
stream stood: the examples that were in it are not seen in that pass, and the batches from there
differ from an uninterrupted run's. Use `parquet` or `webdataset` streaming for a bitwise resume.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import UserError
from . import table_encoding
from .dataset import DataSpec, DataSplits
from .hf import _column, _datasets, _kind, _numbers, _table, _count, image_pixels, load_splits
from .inputs import Augment, Inputs, Normalise, channel_stats, chosen_normalise
from .tabular import targets_of

HEAD = 2048  # examples read first, in storage order: what the class names, statistics and encoding come from
CHUNK = 1024  # examples converted at once when a val or test split is read into memory
RESUME_NOTE = ("data.streaming with hf: the datasets library does not save its shuffle buffer, so the examples "
               "that were in it are skipped in this pass and the batches from here differ from an uninterrupted "
               "run's (parquet and webdataset streams resume bitwise)")


class Examples:
    """Examples (dicts, as a stream yields them) as model inputs and targets, the way the
    training split's first examples taught: images as uint8 (normalised on the device when
    batches are taken), number lists as float32, scalar columns encoded as a table."""

    def __init__(self, features: Any, inputs: list[str], target: str, kind: str, image_size: int, mode: str,
                 columns: list[dict] | None, class_names: list[str] | None, task: str, task_from_head: bool,
                 path: str):
        self.features, self.inputs, self.target, self.kind = features, inputs, target, kind
        self.image_size, self.mode, self.columns, self.class_names = image_size, mode, columns, class_names
        self.task, self.task_from_head, self.path = task, task_from_head, path
        self.learned_from: int | None = None  # the first examples the class names came from (None: a ClassLabel's)

    def _dataset(self, examples: list[dict], names: list[str]) -> Any:
        datasets = _datasets()
        features = datasets.Features({name: self.features[name] for name in names})
        return datasets.Dataset.from_list([{name: example[name] for name in names} for example in examples],
                                          features=features)

    def targets(self, examples: list[dict], where: str) -> np.ndarray:
        table = _table(self._dataset(examples, [self.target]), [self.target], where, "data.target")
        try:
            return targets_of(table, self.target, self.task, self.task_from_head, self.class_names)[0]
        except UserError as error:
            if "not one of the classes" not in str(error) or self.learned_from is None:
                raise
            raise UserError(f"{error}; a stream's classes are those of its first {self.learned_from} examples "
                            "(a ClassLabel target names them all): put examples of every class among the first "
                            "ones") from None

    def x(self, examples: list[dict], where: str) -> np.ndarray:
        if self.kind == "image":
            return np.stack([image_pixels(example[self.inputs[0]], self.image_size, self.mode) for example in examples])
        if self.kind == "numbers":
            return _numbers(self._dataset(examples, self.inputs), self.inputs[0])
        return table_encoding.encode(_table(self._dataset(examples, self.inputs), self.inputs, where), self.columns)

    def __call__(self, examples: list[dict], split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the `split` split's examples (its rows count within the batch in messages)."""
        where = f"{self.path} ({split} split, a batch of examples)"
        return torch.from_numpy(self.x(examples, where)), torch.from_numpy(self.targets(examples, where))

    def read_all(self, split: Iterable[dict], name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole split, converted CHUNK examples at a time."""
        parts = [self(chunk, name) for chunk in _chunks(iter(split), CHUNK)]
        if not parts:
            raise UserError(f"data.path: {self.path}: its {name} split has no examples")
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def _chunks(examples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while chunk := list(itertools.islice(examples, size)):
        yield chunk


class ExampleStream:
    """One process's training batches from the library's stream, pass after pass."""

    def __init__(self, dataset: Any, convert: Examples, ready: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int, seed: int, shuffle_buffer: int, device: torch.device):
        self.dataset, self.convert, self.ready = dataset, convert, ready
        self.batch_size, self.seed, self.shuffle_buffer, self.device = batch_size, seed, shuffle_buffer, device
        self.passes = 0  # completed passes over this process's shards
        self.library_state: dict | None = None  # the stream's state_dict() after the last batch given out
        self.resume_note: str | None = None

    def micro_batches_in_epoch(self, world_size: int) -> None:
        return None

    def state_at(self, epoch: int, served: int) -> None:
        return None  # the library's state does not follow from the position

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        from datasets.distributed import split_dataset_by_node

        stream = split_dataset_by_node(self.dataset.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer),
                                       rank, world_size)
        pending: list[dict] = []
        while True:
            stream.set_epoch(self.passes)
            if self.library_state is not None:
                stream.load_state_dict(self.library_state)
            read = 0
            for example in stream:
                read += 1
                pending.append(example)
                if len(pending) == self.batch_size:
                    x, y = self.convert(pending)
                    pending = []
                    self.library_state = copy.deepcopy(stream.state_dict())
                    yield self.ready(x), y.to(self.device, non_blocking=True), self.batch_size * world_size
            if not read and self.library_state is None:
                raise UserError(f"data.path: {self.convert.path}: process {rank} has no training examples; give "
                                "the stream at least one example per process")
            self.passes, self.library_state = self.passes + 1, None

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "library": self.library_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        passes, library = state.get("passes"), state.get("library")
        if isinstance(passes, bool) or not isinstance(passes, int) or passes < 0:
            raise ValueError(f"the data stream's passes is {passes!r}, not a whole number of 0 or more")
        if library is not None and not isinstance(library, dict):
            raise ValueError("the data stream's library state is not a mapping")
        self.passes, self.library_state = passes, library
        self.resume_note = RESUME_NOTE

    def close(self) -> None:
        """Nothing held open between batches."""


class StreamedExamples:
    """The train split of a streamed dataset, as DataSplits keeps it."""

    def __init__(self, dataset: Any, convert: Examples, normalise: Normalise | None, shuffle_buffer: int,
                 device: torch.device = torch.device("cpu"), augment: Augment | None = None):
        self.dataset, self.convert, self.normalise = dataset, convert, normalise
        self.shuffle_buffer, self.device, self.augment = shuffle_buffer, device, augment

    def samples(self) -> None:
        return None  # a stream does not know its length

    def _ready(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        x = self.normalise(x) if self.normalise is not None else x
        return self.augment(x) if self.augment is not None else x

    def stream(self, batch_size: int, seed: int, drop_last: bool = False) -> ExampleStream:
        """Every batch is full whatever `drop_last` says: a pass's last examples wait for the next."""
        return ExampleStream(self.dataset, self.convert, self._ready, batch_size, seed, self.shuffle_buffer,
                             self.device)

    def describe(self) -> str:
        return (f"train: streamed by the datasets library, length unknown (train.max_steps sets the run), shuffle "
                f"buffer {self.shuffle_buffer}")

    def _with(self, **changes: Any) -> StreamedExamples:
        fields = {"dataset": self.dataset, "convert": self.convert, "normalise": self.normalise,
                  "shuffle_buffer": self.shuffle_buffer, "device": self.device, "augment": self.augment}
        return StreamedExamples(**{**fields, **changes})

    def limited(self, count: int) -> StreamedExamples:
        return self._with(dataset=self.dataset.take(count))

    def with_augment(self, augment: Augment | None) -> StreamedExamples:
        return self._with(augment=augment)

    def to(self, device: torch.device) -> StreamedExamples:
        normalise = self.normalise.to(device) if self.normalise is not None else None
        return self._with(normalise=normalise, device=torch.device(device))


def streamed_hf(path: str, data_files: Any, val_split: float, inputs: list[str], target: str, task: str,
                image_size: int,
                missing: str, normalize: Any, shuffle_buffer: int, task_from_head: bool, mean: list[float] | None,
                std: list[float] | None, columns: list[dict] | None, class_names: list[str] | None,
                first_samples: int | None) -> DataSplits:
    """The splits of a streamed dataset: the train split's first examples as its preview, the
    dataset's own val and test in memory. `first_samples` (the examples the class names,
    statistics and encoding were learned from) is stored, with the rest of the data state."""
    splits = load_splits(path, data_files, streaming=True)
    if val_split > 0 and "val" not in splits:
        raise UserError(f"data.path '{path}': a streamed dataset is validated on its own validation split, and this "
                        "one has none; name one in data.data_files (e.g. {train: train/*.parquet, validation: "
                        "val.parquet}), or set data.val_split: 0 to train without validation")
    train = splits["train"]
    if train.features is None:  # a builder that learns its columns from the data (JSON lines)
        train = train._resolve_features()
    for name in [*inputs, target]:
        _column(train, name, "data.target" if name == target else "data.input")
    kinds = {name: _kind(train.features[name]) for name in inputs}
    kind = kinds[inputs[0]] if len(inputs) == 1 else "scalar"
    if len(inputs) > 1 and any(kinds[name] != "scalar" for name in inputs):
        raise UserError("data.input: images and number lists are read one column at a time; give that column alone, "
                        "or scalar columns (a table)")
    head = list(train.take(first_samples or HEAD))
    if not head:
        raise UserError(f"data.path '{path}': the train split has no examples")
    label = train.features[target]
    if class_names is None and isinstance(label, _datasets().ClassLabel):
        class_names = list(label.names)
    convert = Examples(train.features, inputs, target, kind, image_size, "RGB", columns, class_names, task,
                       task_from_head, path)
    if class_names is None:
        convert.learned_from = len(head)
    where = f"{path} (train split, its first {len(head)} examples)"
    head_targets = _table(convert._dataset(head, [target]), [target], where, "data.target")
    convert.class_names = class_names = targets_of(head_targets, target, task, task_from_head, class_names)[1]
    normalise = None
    if kind == "image":
        grey = all(example[inputs[0]].mode in ("1", "L") for example in head)
        convert.mode = "L" if grey else "RGB"
        pixels = torch.from_numpy(convert.x(head, where))
        normalise = Normalise.from_state(mean, std) if mean is not None \
            else chosen_normalise(normalize, pixels.shape[1], lambda: channel_stats(pixels))
    elif kind == "scalar" and columns is None:
        table = _table(convert._dataset(head, inputs), inputs, where)
        if missing == "error":
            table_encoding.refuse_missing(table, inputs, "input")
        convert.columns = columns = table_encoding.fit(table, inputs, missing)
    data = {"train": convert(head), **{name: convert.read_all(split, name) for name, split in splits.items()
                                       if name != "train"}}
    held = {name: (Inputs(x, normalise) if normalise is not None else x, y) for name, (x, y) in data.items()}
    spec = DataSpec(tuple(data["train"][0].shape[1:]), _count(class_names), tuple(class_names or ()))
    state = {**(normalise.state() if normalise is not None else {}), "class_names": class_names,
             **({"columns": columns} if columns is not None else {}), "first_samples": len(head)}
    return DataSplits(spec, held, state, StreamedExamples(train, convert, normalise, shuffle_buffer))
