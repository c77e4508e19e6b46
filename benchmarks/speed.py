"""mltrain's speed against hand-written loops, PyTorch Lightning and torch's own import.

Three measurements, all in this one process tree:

- steps: samples/s of the training steps of an MLP 784-128-10 and a small CNN (channels 16, 32)
  with Adam, batch 64, on the same in-memory MNIST-shaped data (random, seed 0), at the same
  thread count, for: mltrain's engine (summary.json's train_samples_per_s), the shortest hand
  loop with torch's default Adam, the same with fused Adam, the floor (fused Adam, the epoch's
  batches pre-sliced from one contiguous permuted copy) and Lightning with its RichProgressBar.
  The sides run `--repeats` times in turn; the median counts.
- startup: wall time of whole processes (`mltrain --help`, `config`, `fit` and `eval` on the
  quickstart) against `python -c "import torch"` and against a process that builds one torch
  optimizer (which imports torch._dynamo); median of `--startup-repeats`, after an untimed round,
  with bytecode cached as on a user's machine.
- threads: the quickstart's training with mltrain's default threads, 1 thread and one per core,
  on an otherwise idle machine and while one busy-loop process holds a core.

    python benchmarks/speed.py [--only steps|startup|threads] [--epochs 2] [--samples 60000]
        [--repeats 3] [--startup-repeats 5] [--threads 1]
        [--device cuda --precision bf16 --channels-last]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import mltrain

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
_SCRIPT = Path(sys.executable).with_name("mltrain")  # the console script of this interpreter's environment
MLTRAIN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mltrain"]
BATCH = 64
LR = 1e-3
SHAPE = (1, 28, 28)  # one MNIST image (C, H, W)
CLASSES = 10

# Each model twice: as mltrain's config, and as the same layers written by hand (checked by parameter count).
MODELS = {
    "mlp": ({"arch": "mlp", "hidden": [128]},
            lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, CLASSES))),
    "cnn": ({"arch": "cnn", "channels": [16, 32]},
            lambda: nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES))),
}


@dataclass
class Setup:
    """What every side of the step benchmark shares: the model, the data and how to train."""
    model: str
    x: torch.Tensor  # (N, 1, 28, 28) float32 on `device`
    y: torch.Tensor  # (N,) int64 class ids on `device`
    npz: Path  # the same samples, for mltrain's npz dataset
    output: Path  # where mltrain's run directories go
    epochs: int
    threads: int
    device: torch.device
    precision: str  # fp32 | bf16
    channels_last: bool  # CNN only, as mltrain does


def write_data(samples: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Random MNIST-shaped samples, every class present, saved as mltrain's npz layout."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, *SHAPE), dtype=np.float32)
    y = rng.permutation(np.arange(samples) % CLASSES)
    np.savez(path, x_train=x, y_train=y)
    return torch.from_numpy(x), torch.from_numpy(y)


def clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()  # the queued kernels belong to the timed steps
    return time.perf_counter()


def prepare(s: Setup, fused: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    model = MODELS[s.model][1]().to(s.device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)


def to_input(x: torch.Tensor, s: Setup) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, s: Setup) -> None:
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
        loss = F.cross_entropy(model(to_input(x, s)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def engine(s: Setup) -> float:
    config = {"name": f"bench-{s.model}", "seed": 0, "model": MODELS[s.model][0],
              "data": {"dataset": "npz", "path": str(s.npz), "batch_size": BATCH, "val_split": 0.0, "test_split": 0.0},
              "optimizer": {"name": "adam", "lr": LR},
              "train": {"epochs": s.epochs, "threads": s.threads, "log_every_steps": 10**9,
                        "device": str(s.device), "precision": s.precision},
              "output": {"dir": str(s.output)}}
    summary = mltrain.fit(config, run_dir=s.output / f"{s.model}-{time.monotonic_ns()}", quiet=True).summary
    by_hand = sum(p.numel() for p in MODELS[s.model][1]().parameters())
    if summary["params"] != by_hand:
        sys.exit(f"mltrain's {s.model} has {summary['params']:,} parameters, the hand-written one {by_hand:,}: "
                 "the comparison would be unfair; make MODELS agree")
    return summary["train_samples_per_s"]


def hand_loop(s: Setup, fused: bool) -> float:
    """The shortest correct loop: a fresh permutation per epoch, a gather per step."""
    model, optimizer = prepare(s, fused)
    started = clock(s.device)
    for _ in range(s.epochs):
        order = torch.randperm(len(s.y), device=s.device)
        for start in range(0, len(s.y), BATCH):
            index = order[start:start + BATCH]
            step(model, optimizer, s.x[index], s.y[index], s)
    return s.epochs * len(s.y) / (clock(s.device) - started)


def floor(s: Setup) -> float:
    """Fused Adam on batches that are views of one permuted copy of the data per epoch."""
    model, optimizer = prepare(s, fused=True)
    started = clock(s.device)
    for _ in range(s.epochs):
        order = torch.randperm(len(s.y), device=s.device)
        x, y = s.x[order], s.y[order]
        for start in range(0, len(y), BATCH):
            step(model, optimizer, x[start:start + BATCH], y[start:start + BATCH], s)
    return s.epochs * len(s.y) / (clock(s.device) - started)


def lightning(s: Setup) -> float:
    """A LightningModule and a Trainer with RichProgressBar, as its documentation writes them."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import RichProgressBar

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its banners and tips, set at its import
    warnings.filterwarnings("ignore", module=r"lightning\.")  # its deprecations of torch's internals
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # a DataLoader of in-memory tensors
    class Classifier(pl.LightningModule):
        def __init__(self, net: nn.Module):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_index):
            x, y = batch
            return F.cross_entropy(self.net(to_input(x, s)), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    class EpochTimer(pl.Callback):  # training epochs only, as the other sides
        seconds = 0.0

        def on_train_start(self, trainer, module):
            torch.set_num_threads(s.threads)

        def on_train_epoch_start(self, trainer, module):
            self.started = clock(s.device)

        def on_train_epoch_end(self, trainer, module):
            self.seconds += clock(s.device) - self.started

    model, _ = prepare(s, fused=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.x.cpu(), s.y.cpu()),
                                         batch_size=BATCH, shuffle=True)
    timer = EpochTimer()
    trainer = pl.Trainer(accelerator="gpu" if s.device.type == "cuda" else "cpu", devices=1, max_epochs=s.epochs,
                         precision="bf16-mixed" if s.precision == "bf16" else "32-true",
                         callbacks=[RichProgressBar(), timer], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=s.output)
    trainer.fit(Classifier(model), loader)
    return s.epochs * len(s.y) / timer.seconds


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def steps(args: argparse.Namespace, work: Path) -> None:
    sides = {"mltrain": engine,
             "shortest hand loop, torch's default Adam": lambda s: hand_loop(s, fused=False),
             "hand loop, fused Adam": lambda s: hand_loop(s, fused=True),
             "floor: fused Adam, the epoch's batches pre-sliced contiguously": floor}
    if importlib.util.find_spec("lightning"):
        sides["PyTorch Lightning with RichProgressBar"] = lightning
    else:
        print('PyTorch Lightning is not installed (pip install -e ".[bench]"): its row is skipped\n')
    device = torch.device(args.device)
    x, y = write_data(args.samples, work / "data.npz")
    epochs = args.epochs or 2
    for name in MODELS:
        s = Setup(name, x.to(device), y.to(device), work / "data.npz", work / "runs", epochs, args.threads, device,
                  args.precision, args.channels_last and name == "cnn")
        figures: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, measure in sides.items():
                figures[side].append(measure(s))
        median = {side: statistics.median(values) for side, values in figures.items()}
        print(f"\n{name}: {args.samples:,} samples, batch {BATCH}, {epochs} epoch(s), {args.threads} thread(s), "
              f"{device}, {args.precision}{', channels_last' if s.channels_last else ''}; "
              f"median of {args.repeats}")
        table(["loop (same data, same run)", "samples/s", "mltrain's ratio to it"],
              [[side, f"{value:,.0f}", f"{median['mltrain'] / value:.2f}"] for side, value in median.items()])


OPTIMIZER_ONLY = "import torch; torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)"
# As on a user's machine: Python caches the bytecode it compiles (some sandboxes turn that off).
CACHING_BYTECODE = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def run(command: list[str]) -> float:
    """Wall seconds of a whole process; a failure stops the benchmark with its message."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=CACHING_BYTECODE)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.strip()}")
    return seconds


def startup(args: argparse.Namespace, work: Path) -> None:
    times: dict[str, list[float]] = {}
    training: list[float] = []  # fit's own duration_s
    for repeat in range(-1, args.startup_repeats):  # round -1 warms the disk and bytecode caches, untimed
        run_dir = str(work / f"startup-{repeat}")
        commands = {'python -c "import torch"': [sys.executable, "-c", "import torch"],
                    # The floor of any process that trains: torch's first optimizer imports torch._dynamo.
                    "python: import torch, build one torch.optim.SGD": [sys.executable, "-c", OPTIMIZER_ONLY],
                    "mltrain --help": [*MLTRAIN, "--help"],
                    "mltrain config configs/quickstart.yaml": [*MLTRAIN, "config", str(QUICKSTART)],
                    "mltrain fit configs/quickstart.yaml --quiet": [*MLTRAIN, "fit", str(QUICKSTART), "--quiet",
                                                                    "--run-dir", run_dir],
                    "mltrain eval RUN": [*MLTRAIN, "eval", run_dir]}
        for label, command in commands.items():
            seconds = run(command)
            if repeat < 0:
                continue
            times.setdefault(label, []).append(seconds)
            if label.startswith("mltrain fit"):
                training.append(json.loads((Path(run_dir) / "summary.json").read_text())["duration_s"])
    median = {label: statistics.median(values) for label, values in times.items()}
    torch_import = median['python -c "import torch"']
    print(f"\nstart-up: whole processes, wall time, median of {args.startup_repeats}")
    table(["command", "seconds", "ratio to import torch"],
          [[f"`{label}`", f"{value:.2f}", f"{value / torch_import:.2f}"] for label, value in median.items()])
    print(f"of which the quickstart's training, its summary.json duration_s: {statistics.median(training):.2f} s\n")


@contextlib.contextmanager
def busy_core(busy: bool):
    """One other process spinning on a core while the block runs; killed afterwards, whatever happens."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # spinning before the next fit probes the machine's load
        yield
    finally:
        spinner.kill()
        spinner.wait()


def threads(args: argparse.Namespace, work: Path) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    settings = {"default": None, "1": 1, f"{cores} (one per core)": cores}
    loads = {"idle": False, "one busy process": True}
    results: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(args.repeats):
        for load, busy in loads.items():
            with busy_core(busy):
                for setting, count in settings.items():
                    run_dir = work / f"threads-{repeat}-{busy}-{count}"
                    command = [*MLTRAIN, "fit", str(QUICKSTART), "--quiet", "--device", "cpu",
                               "--run-dir", str(run_dir)]
                    command += ["--set", f"train.threads={count}"] if count else []
                    command += ["--set", f"train.epochs={args.epochs}"] if args.epochs else []
                    wall = run(command)
                    summary = json.loads((run_dir / "summary.json").read_text())
                    results.setdefault((load, setting), []).append({**summary, "wall_s": wall})
    print(f"\nthreads: `mltrain fit configs/quickstart.yaml` on cpu, {cores} usable cores, median of {args.repeats}")
    rows = []
    for load in loads:
        default_speed = statistics.median(r["train_samples_per_s"] for r in results[(load, "default")])
        for setting in settings:
            runs = results[(load, setting)]
            speed = statistics.median(r["train_samples_per_s"] for r in runs)
            rows.append([load, setting, ",".join(sorted({str(r["threads"]) for r in runs})),
                         f"{speed:,.0f}", f"{statistics.median(r['duration_s'] for r in runs):.2f}",
                         f"{statistics.median(r['wall_s'] for r in runs):.2f}", f"{default_speed / speed:.2f}"])
    table(["machine", "threads asked", "threads used", "train samples/s", "fit duration_s", "process wall s",
           "default's ratio to it"], rows)


def machine() -> str:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{date.today()}, {cpu or platform.machine()}, {os.cpu_count()} cores{load}, "
            f"python {platform.python_version()}, torch {torch.__version__}, mltrain {mltrain.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["steps", "startup", "threads"],
                        help="run only this part (repeatable); default: all three")
    parser.add_argument("--epochs", type=int, help="epochs per training run (default: 2 for steps; the "
                        "quickstart's own for threads)")
    parser.add_argument("--samples", type=int, default=60_000, help="training samples for steps")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side for steps and threads")
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every side of steps")
    parser.add_argument("--device", default="cpu", help="device for steps: cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="precision for steps")
    parser.add_argument("--channels-last", action="store_true", help="CNN in channels_last for the hand loops "
                        "and Lightning (mltrain picks it itself on CUDA)")
    args = parser.parse_args()
    parts = {"steps": steps, "startup": startup, "threads": threads}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the busy process and temp files are cleaned up
    print(machine())
    with tempfile.TemporaryDirectory(prefix="mltrain-speed-") as work:
        for name in args.only or parts:
            parts[name](args, Path(work))


if __name__ == "__main__":
    main()
