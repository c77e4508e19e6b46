"""Data that needs no download: scikit-learn's bundled digits and generated spirals."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE, VECTOR
from ..schema import DataSection, NonNegativeFloat
from .dataset import DataSpec, DataSplits
from .sections import ImageDataConfig
from .splits import train_val_test


class SpiralsConfig(DataSection):
    classes: Annotated[int, Field(ge=2)] = 3
    """number of arms, one class each"""
    points: Annotated[int, Field(ge=2)] = 500
    """points per arm"""
    noise: NonNegativeFloat = 0.05
    """std of the Gaussian noise on each coordinate (outer radius is 1)"""


@DATASETS.register("digits", "scikit-learn's 1,797 8x8 handwritten digits, samples (1, 8, 8), 10 classes",
                   ImageDataConfig, tags={IMAGE, CLASSIFICATION})
def digits(val_split: float, seed: int) -> DataSplits:
    """1,797 8x8 grey images of handwritten digits, pixel values scaled from 0..16 to 0..1.
    Read from the file scikit-learn ships, without importing scikit-learn (about 0.9 s)."""
    package = importlib.util.find_spec("sklearn")
    if package is None or package.origin is None:
        raise UserError("dataset 'digits' reads the copy scikit-learn ships: pip install scikit-learn")
    table = np.loadtxt(Path(package.origin).parent / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    x = (table[:, :-1] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    y = table[:, -1].astype(np.int64)
    spec = DataSpec((1, 8, 8), 10, tuple(map(str, range(10))))
    return train_val_test(x, y, spec, val_split, seed)


@DATASETS.register("spirals", "2-D points on N interleaved spiral arms, generated with the seed", SpiralsConfig,
                   tags={VECTOR, CLASSIFICATION})
def spirals(val_split: float, seed: int, classes: int, points: int, noise: float) -> DataSplits:
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
