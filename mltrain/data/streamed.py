"""Samples too many to keep in memory: read from disk by DataLoader workers, batch by batch.

Workers only read and decode (images: uint8, resized; pinned on CUDA); normalisation and
augmentation then run on the whole batch on the training device, exactly as for in-memory
images, so both paths train alike. The samples come from any `SampleSet`: an image folder's
files (`ImageFiles`), tar shards (`tar_shards.TarImages`), Parquet row groups
(`table_stream.ParquetRows`). Files in a folder train in the seeded (seed, epoch) permutation;
shards in their locality-keeping block order (data/orders.py).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from ..errors import UserError
from .files import check_image_header
from .orders import epoch_order
from .inputs import Normalise


# Decoded by Pillow: BMP, which torchvision's decode_image does not read, and PNG (known by its
# signature, whatever the file's name), whose damaged pixel data crashes torchvision 0.29's
# decoder with a segmentation fault where Pillow raises an error.
PILLOW_SUFFIXES = (".bmp",)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(path: Path, image_size: int, key: str = "data.root") -> torch.Tensor:
    """One image file as uint8 (C, image_size, image_size); `key` names where the path came from
    in a message about it."""
    from torchvision.io import ImageReadMode, decode_image

    check_image_header(path, key)
    try:
        if path.suffix.lower() in PILLOW_SUFFIXES or _signature(path) == PNG_SIGNATURE:
            image = _pillow_decode(path)
        else:
            image = decode_image(str(path), mode=ImageReadMode.UNCHANGED)  # (C, H, W) uint8
    except (RuntimeError, OSError, ValueError) as error:
        raise UserError(f"{key}: cannot decode image {path}: {str(error).splitlines()[0]}; "
                        "replace or remove the file") from None
    return _resized(image, image_size)


def _signature(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(len(PNG_SIGNATURE))


def decode_bytes(data: bytes, image_size: int, where: str, key: str = "data.train") -> torch.Tensor:
    """An encoded image (PNG, JPEG, WebP) as uint8 (C, image_size, image_size); `where` says where
    its bytes came from in a message about it."""
    from torchvision.io import ImageReadMode, decode_image

    check_image_header(io.BytesIO(data), key, where)
    try:
        if data.startswith(PNG_SIGNATURE):
            image = _pillow_decode(io.BytesIO(data))
        else:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except (RuntimeError, OSError, ValueError) as error:
        raise UserError(f"{key}: cannot decode image {where}: {str(error).splitlines()[0]}; "
                        "replace or remove it") from None
    return _resized(image, image_size)


def _resized(image: torch.Tensor, image_size: int) -> torch.Tensor:
    from torchvision.transforms.v2.functional import resize

    return resize(image, [image_size, image_size], antialias=True)


def _pillow_decode(source: Path | io.BytesIO) -> torch.Tensor:
    """uint8 (C, H, W) as decode_image would give it: grey, grey and alpha, RGB or RGBA channels
    (1-bit images as grey, palette and other modes as RGB)."""
    from PIL import Image

    with Image.open(source) as image:
        mode = "L" if image.mode == "1" else image.mode if image.mode in ("L", "LA", "RGB", "RGBA") else "RGB"
        pixels = np.array(image.convert(mode))
    return torch.from_numpy(pixels[..., None] if pixels.ndim == 2 else pixels).permute(2, 0, 1).contiguous()


class SampleSet(Protocol):
    """Samples read by index in DataLoader workers: one at a time (`__getitem__`), or a batch at
    once where a set defines `__getitems__` (then it returns the batch as one tensor)."""

    @property
    def sample_shape(self) -> tuple[int, ...]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> torch.Tensor: ...
    def subset(self, start: int, length: int) -> SampleSet: ...
    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        """Every index, in the order the epoch trains on them."""


class ImageFiles(Dataset):
    """Files decoded on demand; every one must have the channel count of `reference`."""

    def __init__(self, files: list[Path], image_size: int, channels: int, reference: Path):
        self.files, self.image_size, self.channels, self.reference = files, image_size, channels, reference

    def __len__(self) -> int:
        return len(self.files)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.channels, self.image_size, self.image_size

    def subset(self, start: int, length: int) -> ImageFiles:
        return ImageFiles(self.files[start:start + length], self.image_size, self.channels, self.reference)

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return epoch_order(len(self.files), seed, epoch)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = decode(self.files[index], self.image_size)
        if image.shape[0] != self.channels:
            raise UserError(f"data.root: images with different channel counts: {self.reference} has {self.channels}, "
                            f"{self.files[index]} has {image.shape[0]}; convert them all to one mode (e.g. RGB) first")
        return image


class _Order:
    """A sampler whose order the loop sets before each pass (the loader and its workers persist).
    The order stays a tensor, 8 bytes a sample; it becomes Python ints a chunk at a time."""

    def __init__(self) -> None:
        self.order = torch.zeros(0, dtype=torch.int64)

    def __iter__(self) -> Iterator[int]:
        for chunk in self.order.split(65_536):
            yield from chunk.tolist()

    def __len__(self) -> int:
        return len(self.order)


def _collate(samples: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A batch: samples read one at a time stacked, a batch read at once as it is."""
    return samples if isinstance(samples, torch.Tensor) else torch.stack(samples)


def read(samples: SampleSet, positions: list[int]) -> torch.Tensor:
    """The samples at `positions`, read here (not in a worker), as one batch."""
    if hasattr(samples, "__getitems__"):
        return samples.__getitems__(positions)
    return torch.stack([samples[i] for i in positions])


class StreamedSamples:
    """A split's samples on disk. `batches(...)` streams model-ready batches through a DataLoader;
    indexing (`samples[index]`) reads those samples at once, for small subsets. `normalise`: of
    images (per channel); None for samples that are model-ready as read."""

    def __init__(self, files: SampleSet, normalise: Normalise | None, workers: int,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 device: torch.device = torch.device("cpu")):
        self.files, self.normalise, self.workers, self.augment = files, normalise, workers, augment
        self.device = device
        self._loaders: dict[int, tuple[DataLoader, _Order]] = {}  # by batch size

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), *self.files.sample_shape))

    def _ready(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.to(self.device, non_blocking=True)
        x = self.normalise(x) if self.normalise is not None else x
        return self.augment(x) if self.augment is not None else x

    def __getitem__(self, index) -> torch.Tensor:
        positions = range(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index).tolist()
        return self._ready(read(self.files, list(positions)))

    def batches(self, y: torch.Tensor, batch_size: int,
                order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Model-ready batches decoded by the DataLoader's worker processes, in `order`."""
        order = order if order is not None else torch.arange(len(y))
        for images, index in zip(self._decoded(batch_size, order), order.split(batch_size)):
            yield images, y[index.to(y.device)]

    def _decoded(self, batch_size: int, order: torch.Tensor) -> Iterator[torch.Tensor]:
        if batch_size not in self._loaders:
            sampler = _Order()
            # Its own generator: starting workers must not draw from the run's RNG (dropout, augmentation).
            loader = DataLoader(self.files, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
                                collate_fn=_collate, num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=self.workers > 0, generator=torch.Generator().manual_seed(0))
            self._loaders[batch_size] = (loader, sampler)
        loader, sampler = self._loaders[batch_size]
        sampler.order = order
        try:
            for images in loader:
                yield self._ready(images)
        except UserError as error:  # raised in a worker: keep its message, not the worker's traceback
            last_line = str(error).strip().splitlines()[-1]
            raise UserError(last_line.removeprefix(f"{UserError.__module__}.{UserError.__name__}: ")) from None

    def close(self) -> None:
        """Ends the loaders' worker processes now, as Lightning does at teardown. Left to the garbage
        collector, an iterator caught in a reference cycle (a paused batch generator in a frame a
        traceback keeps) can outlive its queues, and each of its workers is then waited for 5 s."""
        for loader, _ in self._loaders.values():
            if isinstance(loader._iterator, _MultiProcessingDataLoaderIter):
                loader._iterator._shutdown_workers()
            loader._iterator = None
        self._loaders.clear()

    def epoch_order(self, seed: int, epoch: int) -> torch.Tensor:
        return self.files.epoch_order(seed, epoch)

    def narrow(self, dim: int, start: int, length: int) -> StreamedSamples:
        """The same split cut to samples [start, start + length) (dim 0 only)."""
        assert dim == 0
        return StreamedSamples(self.files.subset(start, length), self.normalise, self.workers, self.augment, self.device)

    def with_augment(self, augment: Callable[[torch.Tensor], torch.Tensor] | None) -> StreamedSamples:
        return StreamedSamples(self.files, self.normalise, self.workers, augment, self.device)

    def to(self, device: torch.device) -> StreamedSamples:
        normalise = self.normalise.to(device) if self.normalise is not None else None
        return StreamedSamples(self.files, normalise, self.workers, self.augment, torch.device(device))
