"""Sequence tasks generated from the seed, for recurrent and attention models.

Each needs memory across steps: `parity` of a bit string, the `adding` problem (sum the two
marked values) and `sorting` digits (every output position depends on the whole input).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ..registry import CLASSIFICATION, DATASETS, REGRESSION, SEQUENCE
from ..schema import DataSection
from .dataset import DataSpec, DataSplits
from .splits import train_val_test


class SequenceTaskConfig(DataSection):
    length: Annotated[int, Field(ge=2)] = 16
    """steps per sequence"""
    samples: Annotated[int, Field(ge=10)] = 4000
    """sequences generated in all (train + val + test)"""


class SortingConfig(SequenceTaskConfig):
    vocab_size: Annotated[int, Field(ge=2)] = 10
    """distinct digits (one-hot features; classes per position)"""


@DATASETS.register("parity", "bit strings (L,), label: odd number of ones; generated with the seed", SequenceTaskConfig,
                   tags={SEQUENCE, CLASSIFICATION})
def parity(val_split: float, seed: int, length: int, samples: int) -> DataSplits:
    """Bit strings (L,) of 0.0/1.0; the label is 1 when the number of ones is odd."""
    bits = np.random.default_rng(seed).integers(0, 2, (samples, length))
    spec = DataSpec((length,), 2, ("even", "odd"))
    return train_val_test(bits.astype(np.float32), bits.sum(axis=1) % 2, spec, val_split, seed)


@DATASETS.register("adding", "the adding problem: steps (L, 2) of (value, marker), target: sum of the 2 marked "
                   "values (regression); generated with the seed", SequenceTaskConfig,
                   tags={SEQUENCE, REGRESSION})
def adding(val_split: float, seed: int, length: int, samples: int) -> DataSplits:
    """Steps (L, 2) of (value in [0, 1), marker 0/1) with exactly two markers; the target is the
    sum of the two marked values (regression, in [0, 2))."""
    rng = np.random.default_rng(seed)
    values = rng.random((samples, length))
    marked = rng.random((samples, length)).argsort(axis=1)[:, :2]  # two distinct positions per row
    markers = np.zeros((samples, length))
    np.put_along_axis(markers, marked, 1.0, axis=1)
    x = np.stack([values, markers], axis=-1).astype(np.float32)  # (N, L, 2)
    y = (values * markers).sum(axis=1).astype(np.float32)  # (N,)
    return train_val_test(x, y, DataSpec((length, 2), None), val_split, seed)


@DATASETS.register("sorting", "L one-hot digits (L, vocab_size), targets (L,): the digits sorted, a class per "
                   "position; generated with the seed", SortingConfig,
                   tags={SEQUENCE, CLASSIFICATION})
def sorting(val_split: float, seed: int, length: int, samples: int, vocab_size: int) -> DataSplits:
    """L digits from 0..vocab_size-1, one-hot (L, vocab_size); the targets (L,) are the digits in
    ascending order: one class per position."""
    digits = np.random.default_rng(seed).integers(0, vocab_size, (samples, length))
    x = np.eye(vocab_size, dtype=np.float32)[digits]  # (N, L, V)
    spec = DataSpec((length, vocab_size), vocab_size, tuple(map(str, range(vocab_size))), target_shape=(length,))
    return train_val_test(x, np.sort(digits, axis=1), spec, val_split, seed)
