"""Data that needs no download: scikit-learn's bundled digits and generated spirals."""

from __future__ import annotations

import numpy as np

from .dataset import DataSpec, InMemoryData
from .splits import train_val_test


def digits(val_split: float, seed: int) -> InMemoryData:
    """1,797 8x8 grey images of handwritten digits, pixel values scaled from 0..16 to 0..1."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    spec = DataSpec((1, 8, 8), 10, tuple(str(name) for name in bunch.target_names))
    return train_val_test(x, y, spec, val_split, seed)


def spirals(val_split: float, seed: int, classes: int, points: int, noise: float) -> InMemoryData:
    """`classes` spiral arms of `points` 2-D points each, wound once around the origin."""
    rng = np.random.default_rng(seed)
    radius = np.linspace(0.05, 1.0, points)
    xs, ys = [], []
    for arm in range(classes):
        angle = 2 * np.pi * (radius + arm / classes)
        arm_points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        xs.append(arm_points + rng.normal(0.0, noise, arm_points.shape))
        ys.append(np.full(points, arm))
    x = np.concatenate(xs).astype(np.float32)  # (classes * points, 2)
    y = np.concatenate(ys).astype(np.int64)
    spec = DataSpec((2,), classes, tuple(f"arm {arm}" for arm in range(classes)))
    return train_val_test(x, y, spec, val_split, seed)
