"""Seeded hold-outs, and the train/val/test split every generated or bundled set shares."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from ..errors import UserError
from .dataset import DataSpec, InMemoryData

TEST_FRACTION = 0.2  # of the whole set, fixed across runs so test scores compare
TEST_SPLIT_SEED = 0  # the test split never moves with the run's seed


def hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Split off `fraction` of the samples: (x_keep, y_keep, x_held, y_held). Stratified by
    class when each target is one class id and every class can give a sample to both sides;
    plain random otherwise (regression, per-position targets, very small sets)."""
    held = int(np.ceil(fraction * len(y)))
    if fraction <= 0 or held == 0:
        return x, y, x[:0], y[:0]
    if held >= len(y):
        raise UserError(f"data: holding out {fraction:g} of {len(y)} samples leaves none to train on; "
                        "use more samples or a smaller data.val_split")
    stratify = None
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        counts = np.unique(y, return_counts=True)[1]
        classes = len(counts)
        if counts.min() >= 2 and classes <= held <= len(y) - classes:
            stratify = y
    x_keep, x_held, y_keep, y_held = train_test_split(x, y, test_size=held, random_state=seed, stratify=stratify)
    return x_keep, y_keep, x_held, y_held


def train_val_test(x: np.ndarray, y: np.ndarray, spec: DataSpec, val_split: float, seed: int) -> InMemoryData:
    """A fixed test split, then `val_split` of the rest held out with the run's seed."""
    x_rest, y_rest, x_test, y_test = hold_out(x, y, TEST_FRACTION, TEST_SPLIT_SEED)
    x_train, y_train, x_val, y_val = hold_out(x_rest, y_rest, val_split, seed)
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    if len(y_val):
        splits["val"] = (x_val, y_val)
    return InMemoryData(spec, {name: (torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(ys))
                               for name, (xs, ys) in splits.items()})
