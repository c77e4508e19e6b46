"""Stored inputs turned into model inputs one batch at a time.

Images are kept as they come (uint8, a quarter of float32's memory) and converted when a batch is
taken: to float, normalised with the training split's per-channel statistics, then augmented (the
training split only). This is the one place that conversion happens: `Inputs` indexes like a tensor,
so the loop's batching by index (`x[index]`) yields ready batches without knowing about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

STATS_CHUNK = 8192  # images per pass when computing channel statistics (bounds the float copy)


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


class Inputs:
    """A split's stored inputs (N, ...); `inputs[index]` is the model-ready float batch."""

    def __init__(self, stored: torch.Tensor, normalise: Normalise | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.stored, self.normalise, self.augment = stored, normalise, augment

    def __getitem__(self, index) -> torch.Tensor:
        x = self.stored[index]
        x = self.normalise(x) if self.normalise is not None else x.float()
        return self.augment(x) if self.augment is not None else x

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def shape(self) -> torch.Size:
        return self.stored.shape

    def narrow(self, dim: int, start: int, length: int) -> Inputs:
        """The same samples' slice, still stored; as torch.Tensor.narrow (dim 0 only)."""
        assert dim == 0
        return Inputs(self.stored.narrow(0, start, length), self.normalise, self.augment)

    def with_augment(self, augment: Callable[[torch.Tensor], torch.Tensor] | None) -> Inputs:
        return Inputs(self.stored, self.normalise, augment)

    def to(self, device: torch.device) -> Inputs:
        normalise = self.normalise.to(device) if self.normalise is not None else None
        return Inputs(self.stored.to(device), normalise, self.augment)


def normalised_splits(splits: dict[str, tuple[torch.Tensor, torch.Tensor]], mean: list[float] | None,
                      std: list[float] | None) -> tuple[dict[str, tuple[Inputs, torch.Tensor]], Normalise]:
    """Every split's stored images wrapped in `Inputs`, normalised with the stored statistics when
    rebuilding for a checkpoint, else with the training split's."""
    normalise = Normalise.from_state(mean, std) if mean is not None else channel_stats(splits["train"][0])
    return {split: (Inputs(x, normalise), y) for split, (x, y) in splits.items()}, normalise
