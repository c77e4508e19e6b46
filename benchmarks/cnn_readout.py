"""The cnn's two readouts side by side: `avg` (the mean over positions) against `flatten` (every
position's features), same blocks, same training, on two tasks:

- where: 16x16 noise images with a bright 4x4 square in one of four quadrants; the class is the
  quadrant, so where things are is all that matters;
- digits: scikit-learn's 8x8 digits, with configs/digits_cnn.yaml's network.

Prints the median test accuracy over --seeds for each readout.

    python benchmarks/cnn_readout.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

import mltrain


def write_where(path: Path, count: int = 1200, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.5, (count, 1, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 4, count)
    for image, label in zip(images, labels):
        top, left = 8 * (label // 2) + rng.integers(0, 5), 8 * (label % 2) + rng.integers(0, 5)
        image[0, top:top + 4, left:left + 4] += 0.6
    cut = count * 3 // 4
    np.savez(path, x_train=images[:cut], y_train=labels[:cut], x_test=images[cut:], y_test=labels[cut:])


TASKS = {
    "where": lambda directory: {"dataset": "npz", "path": str(directory / "where.npz"), "batch_size": 64},
    "digits": lambda directory: {"dataset": "digits", "batch_size": 64},
}
MODEL = {"arch": "cnn", "channels": [16, 32], "pool": "max", "norm": "batch"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    arguments = parser.parse_args()
    print(f"median test accuracy over seeds {arguments.seeds}, {arguments.epochs} epochs, cnn {MODEL['channels']}")
    print("| task | readout: avg | readout: flatten |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        write_where(directory / "where.npz")
        for task, data in TASKS.items():
            scores = {}
            for readout in ("avg", "flatten"):
                runs = [mltrain.fit({"seed": seed, "data": data(directory), "model": {**MODEL, "readout": readout},
                                     "optimizer": {"name": "adamw", "lr": 3e-3}, "scheduler": {"name": "cosine"},
                                     "train": {"epochs": arguments.epochs, "preflight": False},
                                     "output": {"dir": str(directory / "runs")}}).summary["test"]["test/accuracy"]
                        for seed in arguments.seeds]
                scores[readout] = f"{statistics.median(runs):.3f} ({', '.join(f'{run:.3f}' for run in runs)})"
            print(f"| {task} | {scores['avg']} | {scores['flatten']} |")


if __name__ == "__main__":
    main()
