"""A NumPy .npz file of ready arrays: x_train, y_train and optionally x_val, y_val, x_test, y_test.

x holds the samples (N, ...) as numbers; y holds integer class ids 0..C-1 (classification; C is
one more than the largest id in y_train) or float targets (regression, with a linear head).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE, REGRESSION, SEQUENCE, VECTOR
from .dataset import DataSpec, DataSplits
from .files import available_memory, npy_bytes, regular_file
from .sections import FileDataConfig, HeldOutTest, Task
from .splits import as_tensors, split_arrays

SPLIT_NAMES = ("train", "val", "test")


def most_classes(distinct: int) -> int:
    """The most classes (largest id + 1) that `distinct` class ids in use may span. Unused ids are
    ordinary (a subset of a larger label set keeping its ids, a class no sample of a split has) and
    cost one output each, so 10,000 of them pass, or 3 per id in use for large label sets; a stray
    id of 10**7 or 10**12 (a hash, a timestamp, an unmapped code) would build that many outputs."""
    return max(4 * distinct, distinct + 10_000)


def _declared_bytes(archive: np.lib.npyio.NpzFile) -> int:
    """What the arrays would take once loaded, read from their .npy headers alone."""
    total = 0
    for name in archive.files:
        with archive.zip.open(f"{name}.npy") as member:
            major, _ = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            total += npy_bytes(shape, dtype.itemsize)
    return total


def _open(file: Path, key: str = "data.path",
          what: str = "a .npz file with arrays x_train and y_train") -> dict[str, np.ndarray]:
    """Every array of the file, refused before loading when they would not fit in memory; `key`
    names where the path came from in a message about it, `what` what it should be."""
    regular_file(file, key, what)
    try:
        with np.load(file, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single array")
            needed, free = _declared_bytes(archive), available_memory()
            if needed > free // 2:
                raise UserError(f"{key} {file}: its arrays would take {needed / 2**30:.1f} GiB once loaded, "
                                f"more than half the memory free ({free / 2**30:.1f} GiB); use a smaller file")
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise UserError(f"{key} {file}: not a readable NumPy .npz archive (a zip of .npy arrays, as "
                        "numpy.savez writes); check the file") from None


def _samples(file: Path, name: str, x: np.ndarray, key: str = "data.path") -> np.ndarray:
    """The array as float32 samples, each value a finite number."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UserError(f"{key} {file}: {name} holds {x.dtype} values; samples must be numbers")
    if np.issubdtype(x.dtype, np.complexfloating):  # a cast would silently keep the real part alone
        raise UserError(f"{key} {file}: array '{name}' holds complex values; samples must be real numbers: give "
                        "the part the model reads as its own array")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        raise UserError(f"{key} {file}: {name} has a NaN or inf at index {tuple(map(int, np.argwhere(bad)[0]))}; "
                        "samples must be finite")
    return x


def read_samples(file: Path, name: str, key: str) -> np.ndarray:
    """Array `name` of an .npz file as float32 samples, read and checked as a dataset's x arrays are."""
    arrays = _open(file, key, f"a .npz file with an array '{name}'")
    if name not in arrays:
        raise UserError(f"{key} {file}: no array '{name}' (arrays present: {', '.join(arrays) or 'none'}); name "
                        f"the one to read after a colon, e.g. {file}:{next(iter(arrays), 'x_test')}")
    return _samples(file, name, arrays[name], key)


def _pair(file: Path, arrays: dict[str, np.ndarray], split: str, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(x float32, y) of one split, checked; None when the file has neither of its arrays."""
    x_name, y_name = f"x_{split}", f"y_{split}"
    if x_name not in arrays and y_name not in arrays and split != "train":
        return None
    for name in (x_name, y_name):
        if name not in arrays:
            raise UserError(f"data.path {file}: no array '{name}' (arrays present: {', '.join(arrays) or 'none'}); "
                            f"an npz dataset needs x_train and y_train, and x_val/y_val, x_test/y_test in pairs")
    x, y = arrays[x_name], arrays[y_name]
    if len(x) != len(y):
        raise UserError(f"data.path {file}: {x_name} has {len(x)} samples but {y_name} has {len(y)}")
    x = _samples(file, x_name, x)
    if not 2 <= x.ndim <= 4:
        raise UserError(f"data.path {file}: {x_name} is shaped {x.shape}; give (N, features), (N, steps, features) "
                        "or (N, channels, height, width)")
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y.astype(np.float64)).all():
            raise UserError(f"data.path {file}: {y_name} must hold finite numbers for regression")
        return x, y.astype(np.float32)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of class ids
    if y.ndim != 1:
        raise UserError(f"data.path {file}: {y_name} is shaped {y.shape}; classification needs one class id per "
                        "sample, shaped (N,)")
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"data.path {file}: {y_name} holds {y.dtype} values; classification needs integer class "
                        "ids 0..C-1 (or use model.head: linear for float targets)")
    if len(y) and y.min() < 0:
        raise UserError(f"data.path {file}: {y_name} has a negative class id ({int(y.min())} at index "
                        f"{int(np.argmin(y))}); class ids must be 0..C-1")
    return x, y.astype(np.int64)


class NPZConfig(FileDataConfig, HeldOutTest):
    task: Task = "auto"
    """what y holds; auto: from model.head (linear: regression)"""


@DATASETS.register("npz", "a NumPy .npz file (data.path) with x_train, y_train and optionally x_val, y_val, x_test, "
                   "y_test", NPZConfig, tags={IMAGE, VECTOR, SEQUENCE, CLASSIFICATION, REGRESSION})
def npz(val_split: float, seed: int, path: str, task: str, test_split: float) -> DataSplits:
    file = Path(path)
    arrays = _open(file)
    train, val, test = (_pair(file, arrays, split, task) for split in SPLIT_NAMES)
    if not len(train[1]):
        raise UserError(f"data.path {file}: x_train and y_train are empty; give at least a few samples")
    for name, pair in (("x_val", val), ("x_test", test)):
        if pair is not None and pair[0].shape[1:] != train[0].shape[1:]:
            raise UserError(f"data.path {file}: {name} samples are {pair[0].shape[1:]}, x_train's "
                            f"{train[0].shape[1:]}; every split needs the same sample shape")
    num_classes = None
    if task == "classification":
        num_classes, distinct = int(train[1].max()) + 1, len(np.unique(train[1]))
        if distinct < 2:
            raise UserError(f"data.path {file}: every y_train is class {int(train[1][0])}; classification needs "
                            "at least 2 classes")
        if num_classes > most_classes(distinct):
            raise UserError(f"data.path {file}: y_train has class id {num_classes - 1} but only {distinct} distinct "
                            f"ids, so {num_classes:,} outputs; relabel y to 0..{distinct - 1} (e.g. with "
                            "numpy.unique(y, return_inverse=True))")
        for split, pair in zip(SPLIT_NAMES, (train, val, test)):
            if pair is not None and len(pair[1]) and pair[1].max() >= num_classes:
                raise UserError(f"data.path {file}: y_{split} has class id {int(pair[1].max())}, out of range: "
                                f"y_train's ids go up to {num_classes - 1}, so the classes are 0..{num_classes - 1}")
        if num_classes < 2:
            raise UserError(f"data.path {file}: y_train has a single class (0); classification needs at least 2")
    splits = as_tensors(split_arrays(train, val_split, seed, test_split, val, test))
    spec = DataSpec(tuple(train[0].shape[1:]), num_classes, tuple(map(str, range(num_classes or 0))),
                    target_shape=tuple(train[1].shape[1:]) if task == "regression" else ())
    return DataSplits(spec, splits)
