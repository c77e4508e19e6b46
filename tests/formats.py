"""Tiny files in the real formats of the data sources, written the way their publishers write them,
and small configs that read them."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from helpers import TINY, write_config

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format of the MNIST files: magic (0, 0, 0x08 = uint8, ndim), big-endian sizes, data."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def images_and_labels(count: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose brightness follows the label (learnable), and the labels 0..classes-1 in turn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    base = (labels * (200 // classes)).reshape(-1, *[1] * len(shape))
    images = np.clip(base + rng.integers(0, 40, (count, *shape)), 0, 255).astype(np.uint8)
    return images, labels.astype(np.uint8)


def write_mnist(root: Path, folder: str = "MNIST", train: int = 120, test: int = 40, gzipped: bool = False) -> Path:
    """root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] with 28x28 images, 10 classes."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        images, labels = images_and_labels(count, (28, 28), 10, seed=len(split))
        for name, array in zip(MNIST_FILES[split], (images, labels)):
            data = idx_bytes(array)
            if gzipped:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
    return raw


def _pickle(path: Path, entry: dict) -> None:
    path.write_bytes(pickle.dumps(entry, protocol=2))


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    """root/cifar-10-batches-py/: data_batch_1..5, test_batch ({'data': (n, 3072) uint8, 'labels'}), batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names):
        images, labels = images_and_labels(test if name == "test_batch" else per_batch, (3, 32, 32), 10, seed)
        _pickle(folder / name, {"data": images.reshape(len(images), -1), "labels": labels.tolist()})
    _pickle(folder / "batches.meta", {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck"]})
    return folder


def write_cifar100(root: Path, train: int = 200, test: int = 100) -> Path:
    """root/cifar-100-python/: train, test ({'data', 'fine_labels'}), meta ({'fine_label_names'})."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (name, count) in enumerate((("train", train), ("test", test))):
        images, _ = images_and_labels(count, (3, 32, 32), 100, seed)
        labels = np.arange(count) % 100
        _pickle(folder / name, {"data": images.reshape(count, -1), "fine_labels": labels.tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return folder


def write_svhn(root: Path, train: int = 60, test: int = 20) -> None:
    """root/{train,test}_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 standing for the digit 0."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for seed, (name, count) in enumerate((("train", train), ("test", test))):
        images, labels = images_and_labels(count, (32, 32, 3), 10, seed)
        labels = np.where(labels == 0, 10, labels)
        savemat(root / f"{name}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None]})


def source_config(directory: Path, data: dict, model: dict | None = None, **sections) -> Path:
    """write_config's small config with this data section in place of its spirals (and this model)."""
    base = {**TINY, "data": {"batch_size": 16, **data}, "model": model or TINY["model"]}
    return write_config(directory, base=base, **sections)


def write_shards(folder: Path, shards: int = 8, per_shard: int = 40, size: int = 8, seed: int = 0,
                 name: str = "train") -> str:
    """`shards` WebDataset tar files folder/<name>-000000.tar...: per_shard samples each, a PNG
    (`png`, 3 x size x size, dark or light as its class) and its class id (`cls`). Returns their
    brace pattern."""
    import io
    import tarfile

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for number in range(shards):
        with tarfile.open(folder / f"{name}-{number:06d}.tar", "w") as tar:
            for index in range(per_shard):
                label = int(rng.integers(0, 2))
                pixels = np.clip((50, 180)[label] + rng.integers(-40, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                encoded = io.BytesIO()
                Image.fromarray(pixels).save(encoded, format="PNG")
                for extension, content in (("png", encoded.getvalue()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{number:06d}{index:06d}.{extension}")
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
    return str(folder / f"{name}-{{000000..{shards - 1:06d}}}.tar")


def write_token_corpus(folder: Path, tokens: int = 20_000, vocab: int = 40, seed: int = 0,
                       val: int | None = 2_000) -> Path:
    """folder/train.bin (and val.bin): uint16 token ids of a learnable sequence (each token mostly
    the previous one + 1), and a tokenizer.json (the Hugging Face tokenizers format) of `vocab`
    tokens beside them."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, count in (("train", tokens), ("val", val)):
        if count:
            steps = np.where(rng.random(count) < 0.9, 1, rng.integers(0, vocab, count))
            (np.cumsum(steps) % vocab).astype(np.uint16).tofile(folder / f"{name}.bin")
    vocabulary = {chr(ord("a") + i) if i < 26 else f"t{i}": i for i in range(vocab)}
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": [],
                                                        "model": {"type": "WordLevel", "vocab": vocabulary,
                                                                  "unk_token": "a"}}))
    return folder
