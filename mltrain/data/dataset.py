"""In-memory splits and the seeded batch order every source shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Protocol

import torch

from ..errors import UserError
from .inputs import Augment, BatchSource, as_source
from .streamed import StreamedSamples


@dataclass(frozen=True)
class DataSpec:
    sample_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int | None  # None for regression targets
    class_names: tuple[str, ...] = ()
    target_shape: tuple[int, ...] = ()  # () for a class id or a scalar target
    token_vocabulary: int | None = None  # samples of token ids: how many ids the tokenizer has (ids below it)


if TYPE_CHECKING:
    from .stream import TrainingStream


class StreamedTrain(Protocol):
    """A training split that is only ever streamed (a token corpus, a library's stream): its
    samples differ from epoch to epoch or have no count, so no (inputs, targets) pair holds them."""

    def samples(self) -> int | None:
        """Samples in an epoch; None when the stream cannot know."""
    def describe(self) -> str:
        """One line for the run's log: what streams and how."""
    def stream(self, batch_size: int, seed: int, drop_last: bool = False) -> TrainingStream:
        """`drop_last`: leave out an epoch's last global batch when it is smaller than the others."""
    def limited(self, count: int) -> StreamedTrain: ...
    def with_augment(self, augment: Augment | None) -> StreamedTrain: ...
    def to(self, device: torch.device) -> StreamedTrain: ...


@dataclass
class DataSplits:
    """Every split as (inputs, targets) on one device, batched by index. Inputs are tensors, or
    `Inputs` (stored uint8 images, say) that give a model-ready batch for each index.

    With `streamed_train`, training streams from it, and the "train" split holds only a preview of
    its samples, for what reads a training split whole (the pre-flight checks, overfit-tiny)."""

    spec: DataSpec
    splits: dict[str, tuple[torch.Tensor | BatchSource, torch.Tensor]]
    state: dict = field(default_factory=dict)  # what eval needs to rebuild the same inputs
    streamed_train: StreamedTrain | None = None

    def to(self, device: torch.device) -> DataSplits:
        moved = {name: (x.to(device), y.to(device)) for name, (x, y) in self.splits.items()}
        return DataSplits(self.spec, moved, self.state,
                          self.streamed_train.to(device) if self.streamed_train is not None else None)

    def training_stream(self, batch_size: int, seed: int, drop_last: bool = False) -> TrainingStream:
        """The batches training takes, in the seeded order of each epoch; with `drop_last`, every
        one of them full (an epoch's last, smaller global batch left out)."""
        from .stream import SeededPermutation

        if self.streamed_train is not None:
            return self.streamed_train.stream(batch_size, seed, drop_last)
        return SeededPermutation(*self.splits["train"], batch_size, seed, drop_last)

    def close(self) -> None:
        """Ends what the splits hold open: the worker processes of streamed images."""
        for x, _ in self.splits.values():
            if hasattr(x, "close"):
                x.close()

    def size(self, split: str) -> int | None:
        """Samples in the split (in an epoch, for training); None for a stream of unknown length."""
        if split == "train" and self.streamed_train is not None:
            return self.streamed_train.samples()
        return len(self.splits[split][1])

    def subset(self, split: str, count: int) -> DataSplits:
        """The first `count` samples of one split, as the train split of a new dataset."""
        x, y = self.splits[split]
        return DataSplits(self.spec, {"train": (x[:count], y[:count])}, self.state)

    def limited(self, count: int) -> DataSplits:
        """Only the first `count` training samples; the other splits whole."""
        x, y = self.splits["train"]
        return DataSplits(self.spec, {**self.splits, "train": (x.narrow(0, 0, min(count, len(y))), y[:count])},
                          self.state, self.streamed_train.limited(count) if self.streamed_train is not None else None)

    @property
    def augment(self) -> Augment | None:
        """The training batches' augmentation (its generator's state belongs in checkpoints)."""
        return getattr(self.splits["train"][0], "augment", None)

    def augmented(self, augment: Augment) -> DataSplits:
        """Training batches pass through `augment` (wherever they are decoded); the other splits never do."""
        x, y = self.splits["train"]
        return DataSplits(self.spec, {**self.splits, "train": (as_source(x).with_augment(augment), y)}, self.state,
                          self.streamed_train.with_augment(augment) if self.streamed_train is not None else None)

    @property
    def streamed(self) -> bool:
        """Whether training reads its samples from disk as it goes, never holding them all."""
        return self.streamed_train is not None or isinstance(self.splits["train"][0], StreamedSamples)

    def describe(self) -> str:
        """One line on the training targets: how balanced the classes are, or the targets' spread."""
        y = self.splits["train"][1]
        if self.streamed_train is not None:
            return self.streamed_train.describe()
        if self.spec.num_classes is None:
            return f"train targets: mean {y.float().mean():.4g}, std {y.float().std():.4g}"
        counts = torch.bincount(y.flatten(), minlength=self.spec.num_classes).tolist()
        names = self.spec.class_names or tuple(map(str, range(self.spec.num_classes)))
        if len(counts) <= 10:
            return "train class balance: " + ", ".join(f"{name} {count}" for name, count in zip(names, counts))
        least, most = min(range(len(counts)), key=counts.__getitem__), max(range(len(counts)), key=counts.__getitem__)
        return (f"train class balance: {len(counts)} classes, from {counts[least]} ({names[least]}) "
                f"to {counts[most]} ({names[most]}) per class")


def batches(x: torch.Tensor | BatchSource, y: torch.Tensor, batch_size: int,
            order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A split's batches: in the given order (training) or in storage order (evaluation), as
    its source makes them (in memory, or decoded from disk by DataLoader workers)."""
    return as_source(x).batches(y, batch_size, order)


def steps_per_epoch(size: int, batch_size: int) -> int:
    return -(-size // batch_size)


def global_batches(size: int, batch_size: int, world_size: int, drop_last: bool = False) -> int:
    """Micro-batches an epoch has when `world_size` processes each take `batch_size` samples of
    every global batch. A last global batch too small to give every process a sample is left out;
    with `drop_last`, any last global batch smaller than the others is."""
    full, rest = divmod(size, batch_size * world_size)
    counted = full if drop_last else full + (rest >= world_size)
    if counted == 0:
        raise UserError(_no_batch_message(size, batch_size, world_size, drop_last))
    return counted


def _no_batch_message(size: int, batch_size: int, world_size: int, drop_last: bool) -> str:
    """Why an epoch of `size` training samples has no batch, and what to change."""
    processes = f"{world_size} process" + ("es" if world_size > 1 else "")
    if not drop_last:
        return (f"data: the {size} training samples are fewer than the {processes}, so an epoch has no batch for "
                "each to take; give more samples (data.limit) or train with fewer processes")
    return (f"data.drop_last: the {size} training samples are fewer than one global batch (data.batch_size "
            f"{batch_size} x {processes} = {batch_size * world_size}), and data.drop_last is on (true, or auto, "
            "which turns it on for train.compile reduce-overhead and max-autotune), so an epoch has no batch; "
            f"give data.batch_size {max(1, size // world_size)} or less, more samples, or data.drop_last: false")


def shard(order: torch.Tensor, batch_size: int, world_size: int, rank: int,
          drop_last: bool = False) -> tuple[torch.Tensor, list[int]]:
    """This process's part of an epoch's `order` and the global size of each of its batches.

    Each global batch of `world_size * batch_size` consecutive samples of the order is cut into
    `world_size` consecutive parts (as even as possible in the last one), so N processes with
    batch B see exactly the samples one process with batch N*B would, batch for batch. With
    `drop_last`, the samples after the last full global batch are left out: every batch has the
    same shape. (`order` is what remains of the epoch, which began with full batches too.)"""
    if drop_last:
        order = order[:len(order) - len(order) % (batch_size * world_size)]
    if world_size == 1:
        full, rest = divmod(len(order), batch_size)
        return order, [batch_size] * full + [rest] * (rest > 0)
    parts, sizes = [], []
    for global_batch in order.split(batch_size * world_size):
        if len(global_batch) < world_size:
            break
        parts.append(global_batch.tensor_split(world_size)[rank])
        sizes.append(len(global_batch))
    return (torch.cat(parts) if parts else order[:0]), sizes
