"""mltrain's speed against hand-written loops, PyTorch Lightning and torch's own import.

Four measurements, all in this one process tree (the first three by default, `--overhead` or
`--only overhead` for the fourth):

- steps: samples/s of the training steps of an MLP 784-128-10 and a small CNN (channels 16, 32)
  with Adam, batch 64, on the same in-memory MNIST-shaped data (random, seed 0), at the same
  thread count, for: mltrain's engine (summary.json's train_samples_per_s), the shortest hand
  loop with torch's default Adam, the same with fused Adam, the floor (fused Adam, the epoch's
  batches pre-sliced from one permuted copy on the device before its first step) and Lightning
  with its RichProgressBar. Besides samples/s, each side's time to its first optimizer step
  (from the call: data, model, optimizer and, for mltrain, its run directory and pre-flight
  checks) and its steady-state steps/s (each epoch after its first steps: see StepClock).
  The sides run `--repeats` times in turn; the median counts.
- overhead: on the CPU, a tiny MLP (8 features, 8 hidden units, batch 8), whose step is per-step
  overhead alone, trained by mltrain's own loop, by the hand loop (a gather per step, as the
  steps part's) and by the floor (pre-sliced batches), both with fused Adam and
  zero_grad(set_to_none=True): the aten ops each dispatches per optimizer step and its host syncs,
  counted with a TorchDispatchMode over many steps after a warm-up (the steps on which mltrain logs
  left out), the ops mltrain dispatches beyond the floor's, and the steady-state steps/s of each
  (`--samples` samples of 8 features, `--epochs` 1 by default), run in rounds, each round in the
  other order than the one before, mltrain's ratio to a side the median of the rounds' ratios.
- startup: wall time of whole processes (`mltrain --help`, `config`, `fit` and `eval` on the
  quickstart) against `python -c "import torch"` and against a process that builds one torch
  optimizer (which imports torch._dynamo); median of `--startup-repeats`, after an untimed round,
  with bytecode cached as on a user's machine.
- threads: the quickstart's training with mltrain's default threads, 1 thread and one per core,
  on an otherwise idle machine and while one busy-loop process holds a core.

    python benchmarks/speed.py [--only steps|startup|threads|overhead] [--overhead] [--epochs 2]
        [--samples 60000] [--repeats 3] [--startup-repeats 5] [--threads 1]
        [--device cuda --precision bf16 --channels-last]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

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
    "cnn": ({"arch": "cnn", "channels": [16, 32], "readout": "avg"},
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
    compile: str = "false"  # mltrain's train.compile (the hand loops stay eager)


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


WARMUP_STEPS = 20  # the first epoch's steps before the steady state (allocator, caches, lazy imports)


class StepClock:
    """Times a run's optimizer steps, whoever runs them, through torch's global post-step hook:
    the end of the first step (from entering the clock), and the steady state: in each epoch,
    from the end of its first `warmup` steps (later epochs: of their first step, which follows
    the previous epoch's validation and checkpoint) to the end of its last step. The device is
    synchronised at those three points of an epoch only."""

    def __init__(self, device: torch.device, steps_in_epoch: int, warmup: int = WARMUP_STEPS):
        self.device, self.steps_in_epoch = device, steps_in_epoch
        self.warmup = min(warmup, max(steps_in_epoch // 2, 1))
        self.steps = 0
        self.first_step_s = math.nan
        self.steady_steps, self.steady_s = 0, 0.0
        self._window_began: float | None = None

    def __enter__(self) -> StepClock:
        self.started = clock(self.device)
        self._hook = register_optimizer_step_post_hook(self._stepped)
        return self

    def __exit__(self, *exception) -> None:
        self._hook.remove()

    def _stepped(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        in_epoch = (self.steps - 1) % self.steps_in_epoch + 1
        skipped = self.warmup if self.steps <= self.steps_in_epoch else 1
        if self.steps == 1:
            self.first_step_s = clock(self.device) - self.started
        if in_epoch == skipped:
            self._window_began = clock(self.device)
        if in_epoch == self.steps_in_epoch and self._window_began is not None and in_epoch > skipped:
            self.steady_s += clock(self.device) - self._window_began
            self.steady_steps += in_epoch - skipped
            self._window_began = None

    @property
    def steady_steps_per_s(self) -> float:
        return self.steady_steps / self.steady_s if self.steady_s else math.nan


@dataclass
class Timing:
    """One side's run: samples/s over its epochs, the time to its first step and its steady-state speed."""
    samples_per_s: float
    first_step_s: float
    steady_steps_per_s: float

    @classmethod
    def of(cls, samples_per_s: float, steps: StepClock) -> Timing:
        return cls(samples_per_s, steps.first_step_s, steps.steady_steps_per_s)


def steps_in_epoch(samples: int, batch: int) -> int:
    return -(-samples // batch)


def prepare(s: Setup, fused: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    model = MODELS[s.model][1]().to(s.device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)


def to_input(x: torch.Tensor, s: Setup) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


def pre_sliced(x: torch.Tensor, y: torch.Tensor, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's batches, cut before its first step: views of one permuted copy on the data's device."""
    order = torch.randperm(len(y), device=y.device)
    return list(zip(x[order].split(batch), y[order].split(batch)))


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, s: Setup) -> None:
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
        loss = F.cross_entropy(model(to_input(x, s)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def engine(s: Setup) -> Timing:
    config = {"name": f"bench-{s.model}", "seed": 0, "model": MODELS[s.model][0],
              "data": {"dataset": "npz", "path": str(s.npz), "batch_size": BATCH, "val_split": 0.0, "test_split": 0.0},
              "optimizer": {"name": "adam", "lr": LR},
              "train": {"epochs": s.epochs, "threads": s.threads, "log_every_steps": 10**9,
                        "device": str(s.device), "precision": s.precision, "compile": s.compile},
              "output": {"dir": str(s.output)}}
    with StepClock(s.device, steps_in_epoch(len(s.y), BATCH)) as steps:
        summary = mltrain.fit(config, run_dir=s.output / f"{s.model}-{time.monotonic_ns()}", quiet=True).summary
    require_same_size(s.model, summary, MODELS[s.model][1]())
    return Timing.of(summary["train_samples_per_s"], steps)


def require_same_size(name: str, summary: dict, by_hand: nn.Module) -> None:
    """Stops the benchmark unless mltrain built as many parameters as the hand-written model has."""
    count = sum(p.numel() for p in by_hand.parameters())
    if summary["params"] != count:
        sys.exit(f"mltrain's {name} has {summary['params']:,} parameters, the hand-written one {count:,}: "
                 "the comparison would be unfair; make the two models agree")


def hand_loop(s: Setup, fused: bool) -> Timing:
    """The shortest correct loop: a fresh permutation per epoch, a gather per step."""
    with StepClock(s.device, steps_in_epoch(len(s.y), BATCH)) as steps:
        model, optimizer = prepare(s, fused)
        started = clock(s.device)
        for _ in range(s.epochs):
            order = torch.randperm(len(s.y), device=s.device)
            for start in range(0, len(s.y), BATCH):
                index = order[start:start + BATCH]
                step(model, optimizer, s.x[index], s.y[index], s)
        samples_per_s = s.epochs * len(s.y) / (clock(s.device) - started)
    return Timing.of(samples_per_s, steps)


def floor(s: Setup) -> Timing:
    """Fused Adam on each epoch's batches pre-sliced from one permuted copy of the data on its device."""
    with StepClock(s.device, steps_in_epoch(len(s.y), BATCH)) as steps:
        model, optimizer = prepare(s, fused=True)
        started = clock(s.device)
        for _ in range(s.epochs):
            for x, y in pre_sliced(s.x, s.y, BATCH):
                step(model, optimizer, x, y, s)
        samples_per_s = s.epochs * len(s.y) / (clock(s.device) - started)
    return Timing.of(samples_per_s, steps)


def lightning(s: Setup) -> Timing:
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

    with StepClock(s.device, steps_in_epoch(len(s.y), BATCH)) as steps:
        model, _ = prepare(s, fused=False)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.x.cpu(), s.y.cpu()),
                                             batch_size=BATCH, shuffle=True)
        timer = EpochTimer()
        trainer = pl.Trainer(accelerator="gpu" if s.device.type == "cuda" else "cpu", devices=1,
                             max_epochs=s.epochs, precision="bf16-mixed" if s.precision == "bf16" else "32-true",
                             callbacks=[RichProgressBar(), timer], logger=False, enable_checkpointing=False,
                             enable_model_summary=False, default_root_dir=s.output)
        trainer.fit(Classifier(model), loader)
    return Timing.of(s.epochs * len(s.y) / timer.seconds, steps)


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
             "floor: fused Adam, each epoch's batches pre-sliced on the device": floor}
    if importlib.util.find_spec("lightning"):
        sides["PyTorch Lightning with RichProgressBar"] = lightning
    else:
        print('PyTorch Lightning is not installed (pip install -e ".[bench]"): its row is skipped\n')
    device = torch.device(args.device)
    x, y = write_data(args.samples, work / "data.npz")
    epochs = args.epochs or 2
    build_one_optimizer()
    for name in MODELS:
        s = Setup(name, x.to(device), y.to(device), work / "data.npz", work / "runs", epochs, args.threads, device,
                  args.precision, args.channels_last and name == "cnn", args.compile)
        median = median_timings(sides, s, args.repeats)
        ours = median["mltrain"]
        print(f"\n{name}: {args.samples:,} samples, batch {BATCH}, {epochs} epoch(s), {args.threads} thread(s), "
              f"{device}, {args.precision}{', channels_last' if s.channels_last else ''}"
              f"{f', mltrain compiled ({args.compile})' if args.compile != 'false' else ''}; "
              f"median of {args.repeats}; steady state: the first epoch after its first {WARMUP_STEPS} steps, "
              "later ones after their first")
        table(["loop (same data, same run)", "samples/s", "mltrain's ratio to it", "first step (s)",
               "steady steps/s", "mltrain's steady ratio"],
              [[side, f"{t.samples_per_s:,.0f}", f"{ours.samples_per_s / t.samples_per_s:.2f}",
                f"{t.first_step_s:.3f}", f"{t.steady_steps_per_s:,.0f}",
                f"{ours.steady_steps_per_s / t.steady_steps_per_s:.2f}"] for side, t in median.items()])


def build_one_optimizer() -> None:
    """torch's first optimizer imports torch._dynamo (about a second): built here, before any side
    is timed, so that no side's first step pays for it."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)


def median_timings(sides: dict[str, Callable[[Setup], Timing]], s: Setup, repeats: int) -> dict[str, Timing]:
    """Every side `repeats` times, in turn; the median of each figure."""
    runs: dict[str, list[Timing]] = {side: [] for side in sides}
    for _ in range(repeats):
        for side, measure in sides.items():
            runs[side].append(measure(s))
    return {side: median_timing(timings) for side, timings in runs.items()}


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(statistics.median(t.samples_per_s for t in timings),
                  statistics.median(t.first_step_s for t in timings),
                  statistics.median(t.steady_steps_per_s for t in timings))


# The overhead count: a model so small that a step costs what the loop around it does.
TINY = 8  # the tiny MLP's features, hidden units and batch
COUNT_WARMUP = 64  # optimizer steps before the count starts
COUNTED_STEPS = 2048  # a multiple of mltrain's deferred work (every 64 and every 1,024 steps)
HOST_SYNC_OPS = {"aten._local_scalar_dense", "aten.item", "aten.nonzero"}
DEVICE_TO_HOST = " (device->host)"  # marks a copy to the host among the op names
HOST_READS = {torch.Tensor.tolist: "Tensor.tolist", torch.Tensor.numpy: "Tensor.numpy"}
OPS_TARGET, SYNCS_TARGET, SPEED_TARGET = 1.0, 0.0, 0.9  # extra ops and syncs per step; steady steps/s ratio
HAND_LOOP, FLOOR = "hand loop (a gather per step)", "floor (pre-sliced batches)"  # the overhead part's sides


def is_sync(name: str) -> bool:
    return name in HOST_SYNC_OPS or name.endswith(DEVICE_TO_HOST) or name in HOST_READS.values()


@dataclass
class TinyRun:
    """What both loops of the overhead count share: the data (on the CPU) and the settings."""
    x: torch.Tensor  # (N, TINY) float32
    y: torch.Tensor  # (N,) int64 class ids
    npz: Path  # the same samples, for mltrain's npz dataset
    output: Path  # where mltrain's run directories go
    threads: int
    epochs: int
    log_every: int  # mltrain's train.log_every_steps (its default)


def tiny_model() -> nn.Module:
    """mltrain's MLP with hidden [8] as written by hand (its norm `none` is an Identity, no op)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(TINY, TINY), nn.ReLU(), nn.Linear(TINY, CLASSES))


def mltrain_on_tiny(run: TinyRun, max_steps: int | None = None) -> None:
    """mltrain's own loop (`fit`, as `engine` drives it) on the tiny MLP."""
    config = {"name": "overhead", "seed": 0, "model": {"arch": "mlp", "hidden": [TINY]},
              "data": {"dataset": "npz", "path": str(run.npz), "batch_size": TINY, "val_split": 0.0,
                       "test_split": 0.0},
              "optimizer": {"name": "adam", "lr": LR},
              "train": {"epochs": run.epochs, "max_steps": max_steps, "threads": run.threads, "device": "cpu",
                        "log_every_steps": run.log_every},
              "output": {"dir": str(run.output)}}
    summary = mltrain.fit(config, run_dir=run.output / f"overhead-{time.monotonic_ns()}", quiet=True).summary
    require_same_size("tiny MLP", summary, tiny_model())


def hand_loop_on_tiny(run: TinyRun, max_steps: int | None = None) -> None:
    """The hand loop as one writes it (the steps part's `hand_loop`): a fresh permutation per epoch,
    a gather per step, then forward, cross-entropy, backward, fused Adam and
    zero_grad(set_to_none=True)."""
    train_by_hand(run, lambda: gathered(run.x, run.y, TINY), max_steps)


def floor_on_tiny(run: TinyRun, max_steps: int | None = None) -> None:
    """The floor: the same with each epoch's batches pre-sliced on the device before its first step."""
    train_by_hand(run, lambda: pre_sliced(run.x, run.y, TINY), max_steps)


def gathered(x: torch.Tensor, y: torch.Tensor, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(y), device=y.device)
    for start in range(0, len(y), batch):
        index = order[start:start + batch]
        yield x[index], y[index]


def train_by_hand(run: TinyRun, epoch_batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                  max_steps: int | None) -> None:
    torch.set_num_threads(run.threads)
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    taken = 0
    for _ in range(run.epochs):
        for x, y in epoch_batches():
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            taken += 1
            if taken == max_steps:
                return


class StepOps:
    """The ops a run dispatches, by name, per optimizer step: span n runs from the end of step n
    to the end of step n + 1, so it holds step n + 1's work and what the loop did after step n
    (its log on a log step n). Spans `first` to `last - 1` are kept."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last
        self.steps = 0
        self.spans: dict[int, Counter[str]] = {}
        self._current: Counter[str] | None = None

    def stepped(self, optimizer, args, kwargs) -> None:
        """torch's global post-step hook: the end of a step starts the next span."""
        self.steps += 1
        self._current = self.spans.setdefault(self.steps, Counter()) if self.first <= self.steps < self.last else None

    def add(self, name: str) -> None:
        if self._current is not None:
            self._current[name] += 1

    def per_step(self, left_out: Callable[[int], bool]) -> dict[str, float]:
        """Each name's count per step, over the kept spans that `left_out` does not name."""
        chosen = [counts for span, counts in self.spans.items() if not left_out(span)]
        total = sum(chosen, Counter())
        return {name: count / len(chosen) for name, count in total.items()}


class DispatchedOps(TorchDispatchMode):
    """Every aten op into a StepOps, by its name; a copy from a device to the host marked as one."""

    def __init__(self, ops: StepOps):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket)
        self.ops.add(name + DEVICE_TO_HOST if copies_to_host(name, args, kwargs) else name)
        return func(*args, **kwargs)


def copies_to_host(name: str, args: tuple, kwargs: dict) -> bool:
    if name == "aten._to_copy":
        target = kwargs.get("device")
        return args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    if name == "aten.copy_":
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return False


class HostReads(TorchFunctionMode):
    """tolist() and numpy() into a StepOps: on the CPU they read memory without dispatching an op;
    on an accelerator each copies to the host and waits for it (a sync)."""

    def __init__(self, ops: StepOps):
        super().__init__()
        self.ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.ops.add(HOST_READS[func])
        return func(*args, **(kwargs or {}))


def count_ops(train: Callable[..., None], run: TinyRun) -> StepOps:
    """The ops of `train`'s steps after COUNT_WARMUP, over COUNTED_STEPS steps."""
    ops = StepOps(COUNT_WARMUP, COUNT_WARMUP + COUNTED_STEPS)
    hook = register_optimizer_step_post_hook(ops.stepped)
    try:
        with DispatchedOps(ops), HostReads(ops):
            train(run, max_steps=ops.last)
    finally:
        hook.remove()
    return ops


def steady_speed(train: Callable[..., None], run: TinyRun) -> float:
    with StepClock(torch.device("cpu"), steps_in_epoch(len(run.y), TINY)) as steps:
        train(run)
    return steps.steady_steps_per_s


def tiny_data(samples: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Random vectors of TINY features, every class present, saved as mltrain's npz layout."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, TINY), dtype=np.float32)
    y = rng.permutation(np.arange(samples) % CLASSES)
    np.savez(path, x_train=x, y_train=y)
    return torch.from_numpy(x), torch.from_numpy(y)


def mltrain_default(setting: str):
    from mltrain.config import TrainConfig

    return TrainConfig.model_fields[setting].default


def overhead(args: argparse.Namespace, work: Path) -> None:
    x, y = tiny_data(args.samples, work / "tiny.npz")
    run = TinyRun(x, y, work / "tiny.npz", work / "runs", args.threads, args.epochs or 1,
                  mltrain_default("log_every_steps"))
    if steps_in_epoch(len(y), TINY) < COUNT_WARMUP + COUNTED_STEPS:
        sys.exit(f"--samples: the overhead count takes {(COUNT_WARMUP + COUNTED_STEPS) * TINY:,} samples at least")
    sides = {"mltrain": mltrain_on_tiny, HAND_LOOP: hand_loop_on_tiny, FLOOR: floor_on_tiny}
    counted = {side: count_ops(train, run) for side, train in sides.items()}
    logged = lambda span: around_log_step(span, run.log_every)
    rates = {side: ops.per_step(left_out=logged) for side, ops in counted.items()}
    speeds: dict[str, list[float]] = {side: [] for side in sides}
    for repeat in range(args.repeats):
        # The sides in turn, each round in the other order than the one before (ABBA): the
        # machine's drift over the rounds, a larger noise than the gaps measured here on a shared
        # machine, falls on every side alike.
        for side, train in (sides.items() if repeat % 2 == 0 else reversed(sides.items())):
            speeds[side].append(steady_speed(train, run))
    speed = {side: statistics.median(values) for side, values in speeds.items()}
    ratio = {side: statistics.median(ours / theirs for ours, theirs in zip(speeds["mltrain"], values))
             for side, values in speeds.items()}

    print(f"\noverhead: MLP {TINY}-{TINY}-{CLASSES}, batch {TINY}, cpu, {run.threads} thread(s); ops and syncs per "
          f"optimizer step over steps {COUNT_WARMUP + 1}-{COUNT_WARMUP + COUNTED_STEPS} but those around the ones "
          f"mltrain logs on (every {run.log_every}); steady steps/s: {len(y):,} samples, {run.epochs} epoch(s), "
          f"mltrain logging as by default, median of {args.repeats} runs a side, in rounds (ABBA); a ratio: the "
          "median of the rounds' ratios")
    table(["loop", "ops/step", "syncs/step", "steady steps/s", "mltrain's ratio to it"],
          [[side, f"{total(rates[side]):.3g}", f"{total(rates[side], is_sync):.3g}", f"{speed[side]:,.0f}",
            f"{ratio[side]:.2f}"] for side in sides])
    ours, floor = rates["mltrain"], rates[FLOOR]
    print("aten ops mltrain dispatches per step beyond the floor's (negative: fewer)")
    table(["op", "mltrain", "floor", "mltrain's extra"], extra_op_rows(ours, floor))
    print_targets(total(ours) - total(floor), total(ours, is_sync), ratio[HAND_LOOP], ratio[FLOOR])
    # Per log step: its two spans, less two ordinary steps.
    on_log_steps = counted["mltrain"].per_step(left_out=lambda span: not logged(span))
    added = {name: 2 * (rate - ours.get(name, 0)) for name, rate in on_log_steps.items()}
    syncs = ", ".join(f"`{name}` {rate:.3g}" for name, rate in added.items() if is_sync(name) and rate)
    print(f"a step mltrain logs on (left out above) adds {total(added):.3g} ops and {total(added, is_sync):.3g} "
          f"syncs to it ({syncs or 'no sync'})\n")


def around_log_step(span: int, every: int) -> bool:
    """Whether a span holds part of a step mltrain logs on: step n takes a gradient norm in its
    update (span n - 1) and logs after it (span n)."""
    return span % every == 0 or (span + 1) % every == 0


def total(rates: dict[str, float], which: Callable[[str], bool] = lambda name: True) -> float:
    return sum(rate for name, rate in rates.items() if which(name))


def extra_op_rows(ours: dict[str, float], floor: dict[str, float]) -> list[list[str]]:
    """The ops whose rate differs, mltrain's surplus first."""
    extra = {name: ours.get(name, 0) - floor.get(name, 0) for name in ours | floor}
    return [[f"`{name}`" + (" (sync)" if is_sync(name) else ""), f"{ours.get(name, 0):.3g}",
             f"{floor.get(name, 0):.3g}", f"{difference:+.3g}"]
            for name, difference in sorted(extra.items(), key=lambda item: -item[1]) if abs(difference) > 1e-9]


def print_targets(extra_ops: float, syncs: float, speed_ratio: float, floor_ratio: float) -> None:
    verdict = {True: "met", False: "missed"}
    print(f"targets: at most {OPS_TARGET:g} extra op per step (beyond the floor's): {extra_ops:+.3g}, "
          f"{verdict[extra_ops <= OPS_TARGET]}; {SYNCS_TARGET:g} syncs per step: {syncs:.3g}, "
          f"{verdict[syncs <= SYNCS_TARGET]}; at least {SPEED_TARGET}x the hand loop's steady steps/s: "
          f"{speed_ratio:.2f}x, {verdict[speed_ratio >= SPEED_TARGET]} (the floor's: {floor_ratio:.2f}x)")

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
                    # The same with no garbage collection while it starts, as mltrain's command line starts.
                    "python: the same, collecting no garbage": [sys.executable, "-c",
                                                                 "import gc; gc.disable(); " + OPTIMIZER_ONLY],
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
    trained = statistics.median(training)
    fit = median["mltrain fit configs/quickstart.yaml --quiet"]
    print(f"of which the quickstart's training, its summary.json duration_s: {trained:.2f} s; mltrain's own "
          f"(the fit less that and the floor): {fit - trained - median['python: import torch, build one torch.optim.SGD']:.2f} s, "
          f"{fit - trained - median['python: the same, collecting no garbage']:.2f} s against the floor collecting no garbage\n")


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
    parser.add_argument("--only", action="append", choices=["steps", "startup", "threads", "overhead"],
                        help="run only this part (repeatable); default: steps, startup and threads")
    parser.add_argument("--overhead", dest="only", action="append_const", const="overhead",
                        help="the same as --only overhead: ops and host syncs per step of a tiny MLP, on the CPU")
    parser.add_argument("--epochs", type=int, help="epochs per training run (default: 2 for steps, 1 for "
                        "overhead's timing; the quickstart's own for threads)")
    parser.add_argument("--samples", type=int, default=60_000, help="training samples for steps and overhead")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side for steps, threads and overhead's timing")
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every side of steps and overhead")
    parser.add_argument("--device", default="cpu", help="device for steps: cpu, cuda, cuda:N (overhead runs on "
                        "the cpu)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="precision for steps")
    parser.add_argument("--compile", choices=["false", "default", "reduce-overhead", "max-autotune"], default="false",
                        help="mltrain's train.compile for steps (the hand loops stay eager)")
    parser.add_argument("--channels-last", action="store_true", help="CNN in channels_last for the hand loops "
                        "and Lightning (mltrain picks it itself on CUDA)")
    args = parser.parse_args()
    parts = {"steps": steps, "startup": startup, "threads": threads, "overhead": overhead}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the busy process and temp files are cleaned up
    print(machine())
    with tempfile.TemporaryDirectory(prefix="mltrain-speed-") as work:
        for name in dict.fromkeys(args.only or ["steps", "startup", "threads"]):
            parts[name](args, Path(work))


if __name__ == "__main__":
    main()
