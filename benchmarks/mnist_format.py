"""Load time and epoch time of a 60,000-image set in MNIST's own file format.

Generates root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (60,000 + 10,000 random
28x28 images) in a temporary directory, times loading it in this process (torchvision's
import and reader, the val split, the statistics), then runs `mltrain fit` with an mlp for one
epoch and prints its output and the epoch's training time as the run reports it.

    python benchmarks/mnist_format.py [--batch-size 128] [--threads N]
"""

from __future__ import annotations

import argparse
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mltrain.config import section_config
from mltrain.data import build_data

MLTRAIN = str(Path(sys.executable).with_name("mltrain"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format: magic (0, 0, 0x08 = uint8, ndim), big-endian sizes, then the bytes."""
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def write_mnist(root: Path, train: int, test: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count, dtype=np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="train.threads; default: mltrain's choice")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        write_mnist(root / "data", 60_000, 10_000)
        config = root / "mnist.yaml"
        config.write_text(f"data: {{dataset: mnist, root: {root / 'data'}, batch_size: {args.batch_size}}}\n"
                          "model: {arch: mlp, hidden: [256, 128]}\n"
                          f"train: {{epochs: 1, threads: {args.threads or 'null'}, log_every_steps: 100000}}\n"
                          f"output: {{dir: {root / 'runs'}}}\n")
        started = time.perf_counter()
        import torchvision.datasets  # noqa: F401  (timed apart: a fixed cost, whatever the set's size)

        imported = time.perf_counter()
        data = build_data(section_config("data", dataset="mnist", root=str(root / "data")), 0, torch.device("cpu"))
        loaded = time.perf_counter()
        print(f"import torchvision: {imported - started:.2f} s; load (read the IDX files, val split, statistics): "
              f"{loaded - imported:.2f} s for {sum(data.size(split) for split in data.splits):,} images")
        output = subprocess.run([MLTRAIN, "fit", str(config), "--run-dir", str(root / "run")],
                                capture_output=True, text=True, check=True).stdout
        print(output)
        epoch_line = next(line for line in output.splitlines() if line.startswith("epoch 1/1"))
        epoch_seconds = re.search(r"([\d.]+)s(  \* best)?$", epoch_line).group(1)
        print(f"one epoch of training (from the run's epoch line): {epoch_seconds} s")


if __name__ == "__main__":
    main()
