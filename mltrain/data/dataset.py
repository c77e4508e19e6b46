"""In-memory splits and the seeded batch order every source shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch


@dataclass(frozen=True)
class DataSpec:
    sample_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int | None  # None for regression targets
    class_names: tuple[str, ...] = ()
    target_shape: tuple[int, ...] = ()  # () for a class id or a scalar target


@dataclass
class InMemoryData:
    """Every split as (inputs, targets) tensors on one device, batched by index."""

    spec: DataSpec
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    state: dict = field(default_factory=dict)  # what eval needs to rebuild the same inputs

    def to(self, device: torch.device) -> InMemoryData:
        moved = {name: (x.to(device), y.to(device)) for name, (x, y) in self.splits.items()}
        return InMemoryData(self.spec, moved, self.state)

    def size(self, split: str) -> int:
        return len(self.splits[split][1])

    def subset(self, split: str, count: int) -> InMemoryData:
        """The first `count` samples of one split, as the train split of a new dataset."""
        x, y = self.splits[split]
        return InMemoryData(self.spec, {"train": (x[:count], y[:count])}, self.state)


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of one epoch, derived from (seed, epoch) alone so any process can rebuild it."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches by index: the given order (training) or storage order (evaluation)."""
    if order is None:
        for start in range(0, len(y), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]
        return
    order = order.to(x.device)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield x[index], y[index]


def steps_per_epoch(size: int, batch_size: int) -> int:
    return -(-size // batch_size)
