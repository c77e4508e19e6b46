"""Your own images, one folder per class: root/<class>/*.png|jpg|jpeg|bmp|webp.

With root/train/<class>/... (and optionally root/val/..., root/test/...) those folders are the
splits; otherwise val and test are held out of the one pool. Every image is decoded by torchvision,
resized to image_size x image_size and kept in memory as uint8, like the torchvision sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .dataset import DataSpec, InMemoryData
from .inputs import Inputs, Normalise, channel_stats
from .splits import as_tensors, split_arrays

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDERS = ("train", "val", "test")


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


def _decode(files: list[tuple[Path, int]], image_size: int, max_memory_mb: int) -> torch.Tensor:
    """uint8 images (N, C, image_size, image_size); every file must have the same channel count."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    images, first = [], None
    for path, _ in files:
        try:
            image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)  # (C, H, W) uint8
        except (RuntimeError, OSError) as error:
            raise UserError(f"data.root: cannot decode image {path}: {str(error).splitlines()[0]}; "
                            "replace or remove the file") from None
        if first is None:
            first = (path, image.shape[0])
            needed_mb = len(files) * image.shape[0] * image_size ** 2 / 2 ** 20
            if needed_mb > max_memory_mb:
                raise UserError(f"data.root: {len(files)} images of {image.shape[0]}x{image_size}x{image_size} "
                                f"need {needed_mb:,.0f} MiB in memory, above data.max_memory_mb {max_memory_mb}; "
                                "raise data.max_memory_mb if the machine has the memory, or lower data.image_size")
        elif image.shape[0] != first[1]:
            raise UserError(f"data.root: images with different channel counts: {first[0]} has {first[1]}, "
                            f"{path} has {image.shape[0]}; convert them all to one mode (e.g. RGB) first")
        images.append(resize(image, [image_size, image_size], antialias=True))
    return torch.stack(images)


def image_folder(val_split: float, seed: int, root: str, image_size: int, test_split: float, max_memory_mb: int,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 classes: list[str] | None = None) -> InMemoryData:
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
    images = _decode(every_file, image_size, max_memory_mb).numpy()
    labels = np.array([label for _, label in every_file], dtype=np.int64)
    arrays, start = {}, 0
    for name, listing in listings.items():
        arrays[name] = (images[start:start + len(listing)], labels[start:start + len(listing)])
        start += len(listing)
    splits = as_tensors(split_arrays(arrays["train"], val_split, seed, test_split, arrays.get("val"),
                                     arrays.get("test")))
    normalise = Normalise.from_state(mean, std) if mean is not None else channel_stats(splits["train"][0])
    spec = DataSpec(tuple(images.shape[1:]), len(found), tuple(found))
    return InMemoryData(spec, {split: (Inputs(x, normalise), y) for split, (x, y) in splits.items()},
                        {**normalise.state(), "classes": found})
