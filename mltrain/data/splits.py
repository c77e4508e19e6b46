"""Seeded hold-outs, and the train/val/test split every generated or bundled set shares."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .dataset import DataSpec, DataSplits

TEST_FRACTION = 0.2  # held out as test without a test split (fixed seed, so test scores compare)
TEST_SPLIT_SEED = 0  # the test split never moves with the run's seed


def hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int, key: str = "data.val_split"):
    """Split off `fraction` of the samples: (x_keep, y_keep, x_held, y_held). Stratified by
    class when each target is one class id and every class can give a sample to both sides;
    plain random otherwise (regression, per-position targets, very small sets)."""
    held = int(np.ceil(fraction * len(y)))
    if fraction <= 0 or held == 0:
        return x, y, x[:0], y[:0]
    if held >= len(y):
        raise UserError(f"data: holding out {fraction:g} of {len(y)} samples leaves none to train on; "
                        f"use more samples or a smaller {key}")
    stratify = False
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        counts = np.unique(y, return_counts=True)[1]
        stratify = counts.min() >= 2 and len(counts) <= held <= len(y) - len(counts)
    rng = np.random.default_rng(seed)
    held_index = _stratified(y, held, rng) if stratify else rng.permutation(len(y))[:held]
    is_held = np.zeros(len(y), dtype=bool)
    is_held[held_index] = True
    keep_index = rng.permutation(np.flatnonzero(~is_held))
    held_index = rng.permutation(held_index)
    return x[keep_index], y[keep_index], x[held_index], y[held_index]


def _stratified(y: np.ndarray, held: int, rng: np.random.Generator) -> np.ndarray:
    """`held` indices drawn class by class in proportion to each class's count (largest
    remainders get the samples rounding leaves over)."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = counts * held / len(y)
    per_class = np.floor(share).astype(int)
    per_class[np.argsort(per_class - share, kind="stable")[:held - per_class.sum()]] += 1
    return np.concatenate([rng.permutation(np.flatnonzero(inverse == label))[:count]
                           for label, count in enumerate(per_class)])


Arrays = tuple[np.ndarray, np.ndarray]  # (inputs, targets)


def split_arrays(train: Arrays, val_split: float, seed: int, test_split: float = TEST_FRACTION,
                 val: Arrays | None = None, test: Arrays | None = None) -> dict[str, Arrays]:
    """The source's own val and test splits where it has them; the missing ones held out of train:
    test with a fixed seed (so test scores compare across runs), then val with the run's seed.
    Empty splits are left out."""
    x, y = train
    if test is None:
        x, y, *test = hold_out(x, y, test_split, TEST_SPLIT_SEED, "data.test_split")
    if val is None:
        x, y, *val = hold_out(x, y, val_split, seed)
    return {name: (xs, ys) for name, (xs, ys) in (("train", (x, y)), ("val", val), ("test", test)) if len(ys)}


def as_tensors(splits: dict[str, Arrays]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))
            for name, (x, y) in splits.items()}


def train_val_test(x: np.ndarray, y: np.ndarray, spec: DataSpec, val_split: float, seed: int) -> DataSplits:
    """A fixed test split, then `val_split` of the rest held out with the run's seed."""
    return DataSplits(spec, as_tensors(split_arrays((x, y), val_split, seed)))
