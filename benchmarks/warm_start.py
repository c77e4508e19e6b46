"""Warm start against from scratch: pre-train a CNN on one task, fine-tune it on a related one, and
count the epochs each start needs to reach a validation accuracy.

Task A: scikit-learn's digits 0-4 (all of them). Task B: digits 5-8, with only `--train-per-class`
training samples per class, so starting weights matter. The fine-tuned run starts from task A's
best.pt (`model.weights: RUN`): its convolutions are kept, its 5-class output layer is replaced by
a fresh 4-class one.

    python benchmarks/warm_start.py                      # seeds 0 1 2, target 0.9
    python benchmarks/warm_start.py --target 0.95 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import mltrain

MODEL = {"arch": "cnn", "channels": [16, 32], "norm": "batch"}


def write_task(path: Path, digits: list[int], train_per_class: int | None, seed: int) -> None:
    """An npz of the chosen digits: train (all, or `train_per_class` each) and a fixed val split."""
    data = load_digits()
    x, y = (data.images / 16).astype(np.float32)[:, None], data.target
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in digits:
        members = rng.permutation(np.flatnonzero(y == label))
        val.extend(members[:40])
        train.extend(members[40:40 + train_per_class] if train_per_class else members[40:])
    remap = {digit: index for index, digit in enumerate(digits)}
    labels = np.array([remap.get(int(value), -1) for value in y])  # -1: a digit of the other task
    np.savez(path, x_train=x[train], y_train=labels[train], x_val=x[val], y_val=labels[val])


def epochs_to(run_dir: Path, target: float) -> int | None:
    """The first epoch whose val/accuracy reached `target`, or None."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        if "val/accuracy" in record and record["val/accuracy"] >= target:
            return record["epoch"]
    return None


def run(config: dict) -> Path:
    return mltrain.fit(config).run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9, help="validation accuracy to reach")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each task-B run")
    parser.add_argument("--train-per-class", type=int, default=10, help="task B's training samples per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    arguments = parser.parse_args()
    results = {"scratch": [], "warm": []}
    with tempfile.TemporaryDirectory() as scratch_dir:
        directory = Path(scratch_dir)
        for seed in arguments.seeds:
            write_task(directory / f"a{seed}.npz", [0, 1, 2, 3, 4], None, seed)
            write_task(directory / f"b{seed}.npz", [5, 6, 7, 8], arguments.train_per_class, seed)
            common = {"seed": seed, "output": {"dir": str(directory / "runs")}, "train": {"preflight": False}}
            task_a = {"dataset": "npz", "path": str(directory / f"a{seed}.npz")}
            pretrained = run({**common, "name": f"a{seed}", "data": task_a, "model": MODEL,
                              "optimizer": {"name": "adamw", "lr": 3e-3}, "train": {"epochs": 15, "preflight": False}})
            task_b = {"dataset": "npz", "path": str(directory / f"b{seed}.npz"), "batch_size": 8}
            for start, weights in (("scratch", None), ("warm", str(pretrained))):
                run_dir = run({**common, "name": f"b{seed}-{start}", "data": task_b,
                               "model": {**MODEL, "weights": weights}, "optimizer": {"name": "adamw", "lr": 3e-3},
                               "train": {"epochs": arguments.epochs, "preflight": False}})
                results[start].append(epochs_to(run_dir, arguments.target))
    print(f"epochs to val/accuracy {arguments.target} on digits 5-8 with {arguments.train_per_class} training "
          f"samples per class (seeds {arguments.seeds}; None: not within {arguments.epochs} epochs)")
    for start, epochs in results.items():
        reached = [value for value in epochs if value is not None]
        median = statistics.median(reached) if len(reached) == len(epochs) else None
        print(f"| {start} | {epochs} | median {median} |")


if __name__ == "__main__":
    main()
