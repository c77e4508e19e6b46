"""The standard image sets, read from their original files by torchvision's own classes.

torchvision is imported only when one of these is built (it costs about 1.8 s). Each set is read
once into uint8 tensors (N, C, H, W); batches are converted to float and normalised with the
training split's per-channel statistics, which the data state (and so the checkpoint) keeps.
"""

from __future__ import annotations

import gzip
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE, Component
from .dataset import DataSpec, DataSplits
from .inputs import normalised_splits
from .sections import PixelImagesConfig
from .splits import as_tensors, split_arrays


def _expected_files(cls: type) -> tuple[str, list[str]]:
    """(folder under root, the file names in it) that a torchvision class reads."""
    from torchvision import datasets

    if issubclass(cls, datasets.MNIST):  # the unpacked IDX files
        return f"{cls.__name__}/raw", [Path(name).stem for name, _ in cls.resources]
    if issubclass(cls, datasets.CIFAR10):  # CIFAR-100 too: pickled batches and their meta file
        return cls.base_folder, [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return ".", [cls.split_list[split][1] for split in ("train", "test")]  # SVHN's .mat files


def _unpack_gzipped(directory: Path, files: list[str]) -> None:
    """MNIST-style files copied as the published .gz archives are unpacked where torchvision looks."""
    for name in files:
        packed = directory / f"{name}.gz"
        if not (directory / name).exists() and packed.is_file():
            with gzip.open(packed, "rb") as source, open(directory / name, "wb") as target:
                shutil.copyfileobj(source, target)


def _read(cls: type, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One split as uint8 images (N, C, H, W), int64 labels (N,) and the class names."""
    from torchvision import datasets

    if cls is datasets.SVHN:
        split = cls(str(root), split="train" if train else "test", download=download)
        return split.data, split.labels.astype(np.int64), tuple(map(str, range(10)))
    split = cls(str(root), train=train, download=download)
    images = np.asarray(split.data)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # MNIST (N, H, W), CIFAR NHWC
    return images, np.asarray(split.targets, dtype=np.int64), tuple(split.classes)


def _load(class_name: str, name: str, val_split: float, seed: int, root: str, download: bool, normalize: Any,
          mean: list[float] | None = None, std: list[float] | None = None) -> DataSplits:
    from torchvision import datasets

    cls = getattr(datasets, class_name)
    folder, files = _expected_files(cls)
    directory = (Path(root) / folder).resolve()
    if directory.is_dir():
        _unpack_gzipped(directory, files)
    missing = [file for file in files if not (directory / file).is_file()]
    if missing and not download:
        raise UserError(f"dataset '{name}': {directory} lacks {', '.join(missing)} (it needs: {', '.join(files)}); "
                        f"set data.download: true to fetch them into data.root {root}, or copy the files there")
    try:
        x_train, y_train, classes = _read(cls, Path(root), train=True, download=download)
        x_test, y_test, _ = _read(cls, Path(root), train=False, download=download)
    except Exception as error:  # a failed download, a failed md5 check or a file that does not parse
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"dataset '{name}': cannot read its files in {directory}: {problem}. They may be "
                        "incomplete or corrupt: delete them and set data.download: true, or copy the "
                        "original files again") from None
    splits = as_tensors(split_arrays((x_train, y_train), val_split, seed, test=(x_test, y_test)))
    inputs, normalise = normalised_splits(splits, mean, std, normalize)
    return DataSplits(DataSpec(tuple(x_train.shape[1:]), len(classes), classes), inputs, normalise.state())


class TorchvisionSetConfig(PixelImagesConfig):
    root: str = "data"
    """the data directory; relative: to the config file's directory when written there, else to the working directory"""
    download: bool = False
    """download the files into root when they are missing"""


for _name, _class, _title, _what in (
    ("mnist", "MNIST", "MNIST", "70,000 28x28 grey handwritten digits (1, 28, 28), 10 classes"),
    ("fashion_mnist", "FashionMNIST", "FashionMNIST", "70,000 28x28 grey clothing images (1, 28, 28), 10 classes"),
    ("kmnist", "KMNIST", "KMNIST", "70,000 28x28 grey cursive Japanese characters (1, 28, 28), 10 classes"),
    ("cifar10", "CIFAR10", "CIFAR-10", "60,000 32x32 colour images (3, 32, 32), 10 classes"),
    ("cifar100", "CIFAR100", "CIFAR-100", "60,000 32x32 colour images (3, 32, 32), 100 classes"),
    ("svhn", "SVHN", "SVHN", "99,289 32x32 colour house-number digits (3, 32, 32), 10 classes; needs scipy"),
):
    DATASETS.add(Component(_name, f"torchvision's {_title}: {_what}, a train and a test split; files under data.root",
                           partial(_load, _class, _name), TorchvisionSetConfig, frozenset({IMAGE, CLASSIFICATION})))
