"""The order training takes samples in: a pure function of (seed, epoch), so any process can
rebuild it and a resumed run takes exactly the order it left.

Samples in memory (or files in a folder) take a seeded permutation. Samples kept in shards (tar
files, Parquet row groups) are shuffled without leaving them: each epoch the shards come in a
seeded order, and their samples, read in that order, are shuffled in consecutive blocks of
`buffer` samples (one seeded permutation per block). Reads then stay inside a few neighbouring
shards at a time, and samples from different shards still mix; MosaicML streaming's block
shuffle (py1b) works the same way. Only indices are computed here; the samples are read where
they are decoded.
"""

from __future__ import annotations

from typing import Sequence

import torch

SHUFFLE_BUFFER = 10_000  # data.shuffle_buffer's default


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of one epoch."""
    return torch.randperm(size, generator=_generator(seed, epoch))


def shard_order(shard_sizes: Sequence[int], seed: int, epoch: int, buffer: int) -> torch.Tensor:
    """Every sample index (samples numbered shard after shard) in the epoch's order."""
    sizes = torch.as_tensor(list(shard_sizes), dtype=torch.int64)
    starts = torch.cumsum(sizes, 0) - sizes
    generator = _generator(seed, epoch)
    shards = torch.randperm(len(sizes), generator=generator)
    order = torch.cat([torch.arange(starts[shard], starts[shard] + sizes[shard]) for shard in shards.tolist()]) \
        if len(sizes) else torch.zeros(0, dtype=torch.int64)
    for block in order.split(buffer):  # in place: an epoch's order is 8 bytes a sample, held once
        block.copy_(block[torch.randperm(len(block), generator=generator)])
    return order


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
