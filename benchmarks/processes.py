"""Training throughput with 1 and 2 processes (DDP on gloo, 1 CPU thread each), and the scaling
efficiency (2-process samples/s over twice the 1-process samples/s).

Each process keeps the same batch (so 2 processes take a global batch twice as large); the
figure is summary.json's train_samples_per_s (training steps only, every process counted), the
median of `--repeats` runs of the whole `mltrain fit`.

    python benchmarks/processes.py [--epochs 10] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MODELS = {
    "mlp": {"arch": "mlp", "hidden": [256, 128]},
    "cnn": {"arch": "cnn", "channels": [32, 64]},
}


def throughput(config: Path, processes: int, run_dir: Path, device: str) -> float:
    command = [sys.executable, "-m", "mltrain", "fit", str(config), "--quiet", "--run-dir", str(run_dir),
               "--device", device]
    if processes > 1:
        command += ["--nproc", str(processes)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "summary.json").read_text())["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"digits (1,293 training samples), batch 64 per process, {args.epochs} epochs, 1 thread per "
          f"process, {args.device}; median of {args.repeats}")
    print(f"{'model':6} {'1 process':>12} {'2 processes':>12} {'efficiency':>11}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in MODELS.items():
            config = Path(scratch) / f"{name}.yaml"
            config.write_text(yaml.safe_dump({
                "data": {"dataset": "digits", "batch_size": 64, "val_split": 0.0},
                "model": model, "optimizer": {"name": "adam", "lr": 1e-3},
                "train": {"epochs": args.epochs, "threads": 1, "log_every_steps": 1000, "preflight": False},
            }))
            figures = {count: statistics.median(
                throughput(config, count, Path(scratch) / f"{name}-{count}-{repeat}", args.device)
                for repeat in range(args.repeats)) for count in (1, 2)}
            print(f"{name:6} {figures[1]:12,.0f} {figures[2]:12,.0f} {figures[2] / (2 * figures[1]):10.0%}")


if __name__ == "__main__":
    main()
