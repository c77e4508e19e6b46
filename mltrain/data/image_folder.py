"""Your own images, one folder per class: root/<class>/*.png|jpg|jpeg|bmp|webp.

With root/train/<class>/... (and optionally root/val/..., root/test/...) those folders are the
splits; otherwise val and test are held out of the one pool. Every image is decoded by torchvision
(BMP, which it does not read, by Pillow) and resized to image_size x image_size. Sets up to
max_memory_mb are kept in memory as uint8, like the torchvision sets; larger ones stream from disk
through DataLoader workers (data/streamed.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE
from ..schema import NonNegativeInt, PositiveInt
from .dataset import DataSpec, DataSplits
from .sections import HeldOutTest, PixelImagesConfig
from .inputs import Normalise, channel_stats, chosen_normalise, normalised_splits
from .splits import as_tensors, split_arrays
from .streamed import ImageFiles, StreamedSamples, decode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")
STATS_SAMPLE = 2048  # training images read to estimate the channel statistics of a streamed set


def _class_folders(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.is_dir() and not path.name.startswith("."))


def _listing(directory: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image file, class id) for every image under directory/<class>/, in sorted order."""
    files = []
    for folder in _class_folders(directory):
        if folder.name not in classes:
            raise UserError(f"data.root: {folder} is a class the train split does not have "
                            f"(train classes: {', '.join(classes)}); rename or remove it")
        images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"data.root: class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add some or remove the folder")
        files += [(path, classes.index(folder.name)) for path in images]
    return files


def _decode_all(files: list[tuple[Path, int]], image_size: int, channels: int) -> torch.Tensor:
    """uint8 images (N, C, image_size, image_size); every file must have `channels` channels."""
    decoder = ImageFiles([path for path, _ in files], image_size, channels, files[0][0])
    return torch.stack([decoder[i] for i in range(len(decoder))])


class ImageFolderConfig(PixelImagesConfig, HeldOutTest):
    root: str = "data"
    """the folder of class folders; relative: to the config file's directory when written there, else to the working directory"""
    image_size: PositiveInt = 32
    """side of the square every image is resized to, in pixels"""
    max_memory_mb: NonNegativeInt = 4096
    """largest decoded set (uint8, all splits) kept in memory, in MiB; larger sets stream from disk (0: always stream)"""
    workers: NonNegativeInt = 2
    """streamed from disk: DataLoader worker processes decoding images"""


@DATASETS.register("image_folder", "your images: data.root/<class>/*.png|jpg|jpeg|bmp|webp (or data.root/train|val|"
                   "test/<class>/...), resized to data.image_size, kept in memory up to data.max_memory_mb, else "
                   "streamed", ImageFolderConfig, tags={IMAGE, CLASSIFICATION})
def image_folder(val_split: float, seed: int, root: str, image_size: int, test_split: float, max_memory_mb: int,
                 workers: int, normalize: Any, mean: list[float] | None = None, std: list[float] | None = None,
                 classes: list[str] | None = None) -> DataSplits:
    """`mean`, `std` and `classes` come from the data state when rebuilding for a checkpoint."""
    directory = Path(root)
    if not directory.is_dir():
        raise UserError(f"data.root {directory}: no such directory; give a folder with one sub-folder of "
                        "images per class (or train/, val/, test/ folders of those)")
    split_dirs = {name: directory / name for name in SPLIT_FOLDERS if (directory / name).is_dir()} \
        if (directory / "train").is_dir() else {}
    pool = split_dirs.get("train", directory)
    found = [folder.name for folder in _class_folders(pool)]
    if len(found) < 2:
        raise UserError(f"data.root {pool}: found {len(found)} class folder(s); give one sub-folder of images "
                        "per class, at least 2")
    if classes is not None and found != list(classes):
        raise UserError(f"data.root {pool}: its class folders {found} are not the {list(classes)} the model "
                        "was trained on")
    listings = {name: _listing(folder, found) for name, folder in (split_dirs or {"train": pool}).items()}
    every_file = [item for listing in listings.values() for item in listing]
    channels = decode(every_file[0][0], image_size).shape[0]
    needed_mb = len(every_file) * channels * image_size ** 2 / 2 ** 20
    streamed = needed_mb > max_memory_mb
    # Streamed sets are split as indices into the file list, in-memory ones as the images themselves.
    inputs = np.arange(len(every_file)) if streamed else _decode_all(every_file, image_size, channels).numpy()
    labels = np.array([label for _, label in every_file], dtype=np.int64)
    arrays, start = {}, 0
    for name, listing in listings.items():
        arrays[name] = (inputs[start:start + len(listing)], labels[start:start + len(listing)])
        start += len(listing)
    splits = as_tensors(split_arrays(arrays["train"], val_split, seed, test_split, arrays.get("val"),
                                     arrays.get("test")))
    spec = DataSpec((channels, image_size, image_size), len(found), tuple(found))
    if not streamed:
        inputs, normalise = normalised_splits(splits, mean, std, normalize)
        return DataSplits(spec, inputs, {**normalise.state(), "classes": found})
    files = {split: ImageFiles([every_file[i][0] for i in x.tolist()], image_size, channels, every_file[0][0])
             for split, (x, _) in splits.items()}
    normalise = Normalise.from_state(mean, std) if mean is not None \
        else chosen_normalise(normalize, channels, lambda: _sampled_stats(files["train"], seed))
    return DataSplits(spec, {split: (StreamedSamples(files[split], normalise, workers), y)
                               for split, (_, y) in splits.items()}, {**normalise.state(), "classes": found})


def _sampled_stats(files: ImageFiles, seed: int) -> Normalise:
    """Channel statistics of up to STATS_SAMPLE training images drawn with the seed: a streamed set
    is too large to read twice."""
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(files), generator=generator)[:STATS_SAMPLE].tolist()
    return channel_stats(torch.stack([files[i] for i in chosen]))
