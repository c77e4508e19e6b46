"""Images in WebDataset tar shards (`dataset: webdataset`, the optional extra mltrain[webdataset]).

A shard is a tar file whose members are grouped into samples by their name up to the first dot
(WebDataset's convention, its `base_plus_ext`): `000123.png` and `000123.cls` are one sample with
the keys `png` and `cls`. Shards are given as brace patterns (`train-{000000..000099}.tar`,
expanded with WebDataset's `braceexpand`).

Nothing is decoded up front: each shard is indexed once (where every sample's input lies in the
file, and its class id, read from the headers and the small target members), then images are
read at those offsets and decoded in DataLoader workers. The index makes the shards randomly
readable, so training takes the seeded block shuffle of data/orders.py and a resumed run
continues exactly where it stopped, with any number of processes, each reading only its own
samples of every global batch.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE
from ..schema import NonNegativeInt, PositiveInt
from .dataset import DataSpec, DataSplits
from .inputs import Inputs, Normalise, channel_stats, chosen_normalise
from .orders import SHUFFLE_BUFFER, shard_order
from .sections import PixelImagesConfig
from .streamed import StreamedSamples, decode_bytes

WEBDATASET_PIP = 'pip install "mltrain[webdataset]"'
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
TARGET_KEYS = ("cls", "txt", "json")  # an integer class id as text, or a JSON number
STATS_SAMPLES = 2048  # the first training samples whose channel statistics normalise every split
OPEN_SHARDS = 16  # shard files each process keeps open (a block of the shuffle spans a few)


class WebDatasetConfig(PixelImagesConfig):
    train: str
    """the training shards: a path or brace pattern, e.g. shards/train-{000000..000099}.tar (relative to the config file)"""
    val: str | None = None
    """the validation shards; null: data.val_split of the training shards, whole shards drawn with the seed"""
    test: str | None = None
    """the test shards; null: no test split"""
    input: str = "png"
    """the key of the image inside each sample: png, jpg, jpeg or webp (or any key ending in one, e.g. image.png)"""
    target: str = "cls"
    """the key of the class id inside each sample: cls or txt (an integer as text) or json (a number)"""
    image_size: PositiveInt = 32
    """side of the square every image is resized to, in pixels"""
    streaming: bool = True
    """true: read and decode batch by batch in DataLoader workers; false: decode every image into memory first"""
    shuffle_buffer: PositiveInt = SHUFFLE_BUFFER
    """samples shuffled together: each epoch the shards come in a seeded order and their samples are shuffled in blocks this large"""
    workers: NonNegativeInt = 2
    """streamed: DataLoader worker processes reading and decoding images"""


@dataclass(frozen=True)
class Shard:
    """One tar file's index: each sample's image (offset and size in the file) and class id."""
    path: Path
    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.offsets)

    def part(self, start: int, stop: int) -> Shard:
        return Shard(self.path, self.offsets[start:stop], self.sizes[start:stop], self.labels[start:stop])


class TarImages:
    """The samples of a split's shards, read by index: each one's image decoded and resized to
    uint8 (channels, image_size, image_size). Each process (each DataLoader worker) opens the
    shards it reads itself (a file opened before a fork would share its read position with the
    forked workers), and keeps the last OPEN_SHARDS of them open."""

    def __init__(self, shards: list[Shard], image_size: int, channels: int, shuffle_buffer: int):
        self.shards, self.image_size, self.channels, self.shuffle_buffer = shards, image_size, channels, shuffle_buffer
        self.shard_sizes = [len(shard) for shard in shards]
        self._starts = np.cumsum([0] + self.shard_sizes)
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()
        self._opened_by = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": OrderedDict()}

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.channels, self.image_size, self.image_size

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([shard.labels for shard in self.shards]))

    def __getitem__(self, index: int) -> torch.Tensor:
        number = int(np.searchsorted(self._starts, index, side="right")) - 1
        shard, within = self.shards[number], index - int(self._starts[number])
        offset, size = int(shard.offsets[within]), int(shard.sizes[within])
        where = f"{shard.path} (byte {offset})"
        image = decode_bytes(self._read(number, offset, size), self.image_size, where)
        if image.shape[0] != self.channels:
            raise UserError(f"data.train: images with different channel counts: the first has {self.channels}, "
                            f"the one in {where} has {image.shape[0]}; convert them all to one mode (e.g. RGB) first")
        return image

    def _read(self, number: int, offset: int, size: int) -> bytes:
        if self._opened_by != os.getpid():
            self._open, self._opened_by = OrderedDict(), os.getpid()
        if number in self._open:
            self._open.move_to_end(number)
        else:
            self._open[number] = open(self.shards[number].path, "rb")
            if len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)[1].close()
        file = self._open[number]
        file.seek(offset)
        return file.read(size)

    def subset(self, start: int, length: int) -> TarImages:
        """Samples [start, start + length), in their shards."""
        kept, end = [], start + length
        for shard, first in zip(self.shards, self._starts):
            lo, hi = max(start - first, 0), min(end - first, len(shard))
            if lo < hi:
                kept.append(shard.part(lo, hi))
        return TarImages(kept, self.image_size, self.channels, self.shuffle_buffer)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return shard_order(self.shard_sizes, seed, epoch, self.shuffle_buffer)


def expand(pattern: str, key: str) -> list[Path]:
    """The shard files a brace pattern names; each must be a regular file."""
    try:
        import webdataset
    except ImportError:
        raise UserError(f"data.dataset webdataset: the `webdataset` library is not installed; {WEBDATASET_PIP}") \
            from None
    files = [Path(name) for name in webdataset.shardlists.expand_urls(pattern)]
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise UserError(f"data.{key} '{pattern}': {len(missing)} of its {len(files)} shard(s) are not files, e.g. "
                        f"{missing[0]}; give a path or brace pattern of tar files (relative to the config file)")
    return files


def index_shard(path: Path, input_key: str, target_key: str, key: str) -> Shard:
    """Where each sample's image lies in the shard, and its class id, in the shard's order.
    Extensions compare in lower case, as WebDataset's do."""
    from webdataset.tariterators import base_plus_ext

    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    offsets, sizes, labels = [], [], []
    try:
        with tarfile.open(path, "r:") as tar:  # offsets into a compressed stream would not be file offsets
            for info in tar:
                if not info.isfile():
                    continue
                base, extension = base_plus_ext(info.name)
                if base is not None and extension.lower() in (input_key, target_key):
                    samples.setdefault(base, {})[extension.lower()] = info
            for base, members in samples.items():
                for needed in (input_key, target_key):
                    if needed not in members:
                        raise UserError(f"data.{key}: {path}: sample '{base}' has no '{needed}' member; every sample "
                                        f"needs its data.input ({input_key}) and data.target ({target_key})")
                image, target = members[input_key], members[target_key]
                offsets.append(image.offset_data)
                sizes.append(image.size)
                labels.append(_class_id(tar.extractfile(target).read(), f"{path}: {target.name}"))
    except tarfile.CompressionError:
        raise UserError(f"data.{key}: {path} is a compressed tar; shards are read at byte offsets, so decompress it "
                        "first (gunzip), as WebDataset's own shards are") from None
    except (tarfile.TarError, OSError) as error:
        raise UserError(f"data.{key}: {path}: not a readable tar file ({error}); give WebDataset tar shards") \
            from None
    if not offsets:
        raise UserError(f"data.{key}: {path}: no sample has both a '{input_key}' and a '{target_key}' member; set "
                        "data.input and data.target to the keys its samples have")
    return Shard(path, np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64),
                 np.array(labels, dtype=np.int64))


def _class_id(content: bytes, where: str) -> int:
    text = content.decode("utf-8", errors="replace").strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"data.target: {where} holds {text[:40]!r}, not a class id (a whole number of 0 or more)")
    return value


@DATASETS.register("webdataset", "images in WebDataset tar shards (mltrain[webdataset]): data.train (and val, test) "
                   "brace patterns, data.input the image key, data.target the class key; streamed, resumed exactly",
                   WebDatasetConfig, tags={IMAGE, CLASSIFICATION})
def webdataset(val_split: float, seed: int, train: str, val: str | None, test: str | None, input: str, target: str,
               image_size: int, streaming: bool, shuffle_buffer: int, workers: int, normalize: Any,
               mean: list[float] | None = None, std: list[float] | None = None, num_classes: int | None = None,
               first_samples: int | None = None) -> DataSplits:
    """`mean`, `std`, `num_classes` and `first_samples` (the training images the statistics were
    measured on) come from the data state when rebuilding for a checkpoint."""
    input, target = input.lower(), target.lower()
    if input.rsplit(".", 1)[-1] not in IMAGE_KEYS:
        raise UserError(f"data.input '{input}': give the key of an image ({', '.join(IMAGE_KEYS)})")
    if target.rsplit(".", 1)[-1] not in TARGET_KEYS:
        raise UserError(f"data.target '{target}': give the key of a class id ({', '.join(TARGET_KEYS)})")
    splits = {name: [index_shard(path, input, target, name) for path in expand(pattern, name)]
              for name, pattern in (("train", train), ("val", val), ("test", test)) if pattern}
    if val is None and val_split > 0:
        splits["train"], splits["val"] = _held_out_shards(splits["train"], val_split, seed)
    channels = _channels(splits["train"][0], image_size)
    sets = {name: TarImages(shards, image_size, channels, shuffle_buffer) for name, shards in splits.items()}
    labels = {name: images.labels for name, images in sets.items()}
    classes = num_classes if num_classes is not None else max(int(y.max()) for y in labels.values()) + 1
    if classes < 2:
        raise UserError(f"data.train: every sample's {target} is class 0; classification needs at least 2 classes")
    for name, y in labels.items():
        if int(y.max()) >= classes:
            raise UserError(f"data.{name}: holds class id {int(y.max())}, but the model was trained on {classes} "
                            "classes")

    def first_images_statistics() -> Normalise:  # the first training images in shard order: one sweep
        nonlocal first_samples
        first_samples = min(STATS_SAMPLES, len(sets["train"]))
        return channel_stats(_decoded(sets["train"], first_samples))

    normalise = Normalise.from_state(mean, std) if mean is not None \
        else chosen_normalise(normalize, channels, first_images_statistics)
    spec = DataSpec((channels, image_size, image_size), classes, tuple(map(str, range(classes))))
    state = {**normalise.state(), "num_classes": classes, "first_samples": first_samples}
    if not streaming:
        return DataSplits(spec, {name: (Inputs(_decoded(images, len(images)), normalise), labels[name])
                                 for name, images in sets.items()}, state)
    return DataSplits(spec, {name: (StreamedSamples(images, normalise, workers), labels[name])
                             for name, images in sets.items()}, state)


def _channels(shard: Shard, image_size: int) -> int:
    """The channel count of the shard's first image, which every image must share."""
    offset, size = int(shard.offsets[0]), int(shard.sizes[0])
    with open(shard.path, "rb") as file:
        file.seek(offset)
        return decode_bytes(file.read(size), image_size, f"{shard.path} (byte {offset})").shape[0]


def _decoded(images: TarImages, count: int) -> torch.Tensor:
    return torch.stack([images[index] for index in range(count)])


def _held_out_shards(shards: list[Shard], fraction: float, seed: int) -> tuple[list[Shard], list[Shard]]:
    """(train, val): `fraction` of the training shards as val (at least one; whole shards, drawn with the seed)."""
    held = max(1, round(fraction * len(shards)))
    if held >= len(shards):
        raise UserError(f"data.val_split: holding out {fraction:g} of {len(shards)} training shard(s) leaves none "
                        "to train on; give data.val shards, more shards, or data.val_split: 0")
    chosen = set(np.random.default_rng(seed).permutation(len(shards))[:held].tolist())
    return ([shard for number, shard in enumerate(shards) if number not in chosen],
            [shard for number, shard in enumerate(shards) if number in chosen])
