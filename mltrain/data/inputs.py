"""Stored inputs turned into model inputs one batch at a time.

Images are kept as they come (uint8, a quarter of float32's memory) and converted when a batch is
taken: to float, normalised with the training split's per-channel statistics, then augmented (the
training split only). This is the one place that conversion happens.

`Inputs` (in memory) and `streamed.StreamedSamples` (on disk) are the two kinds of batch source:
each owns its batching (`batches`), trimming (`narrow`), augmentation (`with_augment`) and move
to a device (`to`). A split's plain tensor becomes an `Inputs` through `as_source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

import torch

from ..errors import UserError
from .orders import epoch_order

STATS_CHUNK = 8192  # images per pass when computing channel statistics (bounds the float copy)
# Batches taken in a given order are gathered this many at a time (one index op for all of them),
# fewer when that copy would pass GATHER_BYTES: measured on the CPU, a larger copy (MNIST batches of
# 64, say) has left the cache before its last batches are read, and costs more than it saves.
BATCHES_PER_GATHER = 64
GATHER_BYTES = 1 << 20


@dataclass(frozen=True)
class Normalise:
    """(x - mean) / std per channel, in the stored units (0..255 for uint8 images)."""

    mean: torch.Tensor  # (C, 1, 1) float32
    std: torch.Tensor  # (C, 1, 1) float32

    @classmethod
    def from_state(cls, mean: list[float], std: list[float]) -> Normalise:
        return cls(torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1))

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def to(self, device: torch.device) -> Normalise:
        return Normalise(self.mean.to(device), self.std.to(device))


def channel_stats(images: torch.Tensor) -> Normalise:
    """Per-channel mean and std of (N, C, H, W) images, accumulated in float64 chunk by chunk."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(STATS_CHUNK):
        chunk = chunk.to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)  # a constant channel stays finite
    return Normalise(mean.float().view(-1, 1, 1), std.float().view(-1, 1, 1))


Augment = Callable[[torch.Tensor], torch.Tensor]


class BatchSource(Protocol):
    """What the loop, evaluation and the checks batch from."""

    def batches(self, y: torch.Tensor, batch_size: int,
                order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def narrow(self, dim: int, start: int, length: int) -> BatchSource: ...
    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """Every sample's index, in the order training takes them in `epoch`."""
    def with_augment(self, augment: Augment | None) -> BatchSource: ...
    def to(self, device: torch.device) -> BatchSource: ...
    def __len__(self) -> int: ...


class Inputs:
    """A split's stored inputs (N, ...); `inputs[index]` is the model-ready batch."""

    def __init__(self, stored: torch.Tensor, normalise: Normalise | None = None, augment: Augment | None = None):
        self.stored, self.normalise, self.augment = stored, normalise, augment

    def _ready(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x) if self.normalise is not None else x
        return self.augment(x) if self.augment is not None else x

    def __getitem__(self, index) -> torch.Tensor:
        return self._ready(self.stored[index])

    def batches(self, y: torch.Tensor, batch_size: int,
                order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches in storage order (views), or in `order`: gathered by index several at a time, then
        each made ready (normalised, augmented) as it is taken, so augmentation still draws batch by
        batch. Measured on the CPU (60,000 x 784 floats): gathers as the epoch goes are faster than
        one permuted copy of the epoch, whose fresh 180 MB buffer costs more in page faults."""
        if order is None:
            for start in range(0, len(y), batch_size):
                yield self._ready(self.stored[start:start + batch_size]), y[start:start + batch_size]
            return
        order = order.to(self.stored.device)
        gathered = batch_size * self._batches_per_gather(batch_size)
        for start in range(0, len(order), gathered):
            index = order[start:start + gathered]
            for x, y_batch in zip(self.stored[index].split(batch_size), y[index].split(batch_size)):
                yield self._ready(x), y_batch

    def _batches_per_gather(self, batch_size: int) -> int:
        batch_bytes = batch_size * self.stored[:1].nbytes  # [:1]: one sample, or none
        return max(1, min(BATCHES_PER_GATHER, GATHER_BYTES // max(batch_bytes, 1)))

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def shape(self) -> torch.Size:
        return self.stored.shape

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.stored), seed, epoch)

    def narrow(self, dim: int, start: int, length: int) -> Inputs:
        """The same samples' slice, still stored; as torch.Tensor.narrow (dim 0 only)."""
        assert dim == 0
        return Inputs(self.stored.narrow(0, start, length), self.normalise, self.augment)

    def with_augment(self, augment: Augment | None) -> Inputs:
        return Inputs(self.stored, self.normalise, augment)

    def to(self, device: torch.device) -> Inputs:
        normalise = self.normalise.to(device) if self.normalise is not None else None
        return Inputs(self.stored.to(device), normalise, self.augment)


def as_source(x: torch.Tensor | BatchSource) -> BatchSource:
    """A split's inputs as a batch source: a plain tensor is read as it is stored."""
    return Inputs(x) if isinstance(x, torch.Tensor) else x


PIXEL_MAX = 255.0  # stored images are uint8; data.normalize's statistics are on the 0..1 scale


def chosen_normalise(normalize: Any, channels: int, measure: Callable[[], Normalise]) -> Normalise:
    """The normalisation `data.normalize` asks for: the data's own statistics (`measure()`) for
    auto and data, pixels scaled to 0..1 for none, else the given {mean, std} on the 0..1 scale
    (RGB statistics averaged for grey images)."""
    if normalize in ("auto", "data"):
        return measure()
    if normalize == "none":
        return Normalise(torch.zeros(channels, 1, 1), torch.full((channels, 1, 1), PIXEL_MAX))
    mean, std = torch.tensor(normalize.mean), torch.tensor(normalize.std)
    if len(mean) != len(std) or (len(mean) != channels and not (len(mean) == 3 and channels == 1)):
        raise UserError(f"data.normalize: {len(mean)} means and {len(std)} stds for images of {channels} "
                        "channel(s); give one of each per channel")
    if len(mean) != channels:
        mean, std = mean.mean(dim=0, keepdim=True), std.mean(dim=0, keepdim=True)
    return Normalise((mean * PIXEL_MAX).view(-1, 1, 1), (std * PIXEL_MAX).view(-1, 1, 1))


def normalised_splits(splits: dict[str, tuple[torch.Tensor, torch.Tensor]], mean: list[float] | None,
                      std: list[float] | None,
                      normalize: Any) -> tuple[dict[str, tuple[Inputs, torch.Tensor]], Normalise]:
    """Every split's stored images wrapped in `Inputs`, normalised with the stored statistics when
    rebuilding for a checkpoint, else as `data.normalize` says."""
    train = splits["train"][0]
    normalise = Normalise.from_state(mean, std) if mean is not None \
        else chosen_normalise(normalize, train.shape[1], lambda: channel_stats(train))
    return {split: (Inputs(x, normalise), y) for split, (x, y) in splits.items()}, normalise
