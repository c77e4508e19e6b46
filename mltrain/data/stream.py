"""How training batches come: a stream hands each process its share of every global batch, in
an order it owns, and can say where it stands (`state_dict`) so a resumed run continues the
epoch exactly where it stopped. The loop never computes an order or a shard itself.

`SeededPermutation` is the stream of a split held in memory (or indexed on disk): the epoch's
order derives from (seed, epoch) alone (a permutation, or the block shuffle of shards), so its
state is only how far the epoch has gone.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch

from .dataset import batches, global_batches, shard
from .inputs import BatchSource, as_source

# torch.compile modes that capture CUDA graphs on a GPU: a replay reuses its output buffers, and
# each batch shape records a graph of its own.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")

# x, y and the number of samples in the global batch this micro-batch is a part of (over every process)
Batch = tuple[torch.Tensor, torch.Tensor, int]


class TrainingStream(Protocol):
    def micro_batches_in_epoch(self, world_size: int) -> int | None:
        """Micro-batches each process takes in an epoch; None when the stream cannot know (then
        the run's length is train.max_steps)."""

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        """This process's micro-batches of `epoch` (counted from 1), from where the stream stands."""

    def state_dict(self) -> dict[str, Any]:
        """Where this process's stream stands: enough for `batches` to continue from there."""

    def state_at(self, epoch: int, served: int) -> dict[str, Any] | None:
        """The state it has when `served` samples of `epoch` (over every process) are given out;
        None when its state does not follow from that (a library's stream)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # After load_state_dict: one line on how the resumed stream differs from an uninterrupted one, or None.
    resume_note: str | None

    def close(self) -> None:
        """Ends what the stream holds open (DataLoader workers)."""


def drops_last(drop_last: bool | str, compile_mode: str | None) -> bool:
    """Whether training leaves out an epoch's last, smaller batch: as `data.drop_last` says; auto:
    exactly when `compile_mode` (train.compile's torch.compile mode, None when eager) captures CUDA
    graphs, which record a graph for every batch shape."""
    if drop_last == "auto":
        return compile_mode in CUDA_GRAPH_MODES
    return drop_last


class EpochPosition:
    """The whole state of a stream whose every epoch's order derives from (seed, epoch): how far
    the epoch has gone. A subclass says how many samples an epoch has."""

    resume_note = None  # a resumed stream continues exactly

    def __init__(self) -> None:
        self.epoch = 0  # the epoch being served
        self.served = 0  # samples of `epoch` given out, over every process

    def epoch_samples(self) -> int:
        raise NotImplementedError

    def _serving(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.served = epoch, 0

    def state_at(self, epoch: int, served: int) -> dict[str, Any]:
        return {"epoch": epoch, "served": served}

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ValueError naming an entry that is missing or impossible."""
        epoch, served = state.get("epoch"), state.get("served")
        for key, value in (("epoch", epoch), ("served", served)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"the data stream's {key} is {value!r}, not a whole number of 0 or more")
        if served > self.epoch_samples():
            raise ValueError(f"the data stream has served {served} samples of an epoch of {self.epoch_samples()}")
        self.epoch, self.served = epoch, served


class SeededPermutation(EpochPosition):
    """A split's batches in the epoch's order (a permutation, or a block shuffle of shards), each
    global batch of `world_size * batch_size` samples cut into one consecutive part per process;
    with `drop_last`, an epoch's last global batch is left out when it is smaller than the others."""

    def __init__(self, x: torch.Tensor | BatchSource, y: torch.Tensor, batch_size: int, seed: int,
                 drop_last: bool = False):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.drop_last = x, y, batch_size, seed, drop_last

    def epoch_samples(self) -> int:
        return len(self.y)

    def micro_batches_in_epoch(self, world_size: int) -> int:
        return global_batches(len(self.y), self.batch_size, world_size, self.drop_last)

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[Batch]:
        self._serving(epoch)
        order = as_source(self.x).epoch_order(self.seed, epoch)[self.served:]
        order, global_sizes = shard(order, self.batch_size, world_size, rank, self.drop_last)
        for (x, y), global_size in zip(batches(self.x, self.y, self.batch_size, order), global_sizes):
            self.served += global_size  # before the yield: a checkpoint taken after this batch counts it
            yield x, y, global_size

    def close(self) -> None:
        """Nothing of its own: the split it reads is the data's, which closes it."""
