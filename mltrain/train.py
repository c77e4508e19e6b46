"""fit(): the one training loop, from a resolved Config to a finished run directory."""

from __future__ import annotations

import math
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import capture_rng, save_checkpoint
from .config import Config, config_to_dict, dump_config
from .data import build_data
from .data.dataset import batches, epoch_order, steps_per_epoch
from .devices import pick_device, set_threads
from .errors import TrainingFailed
from .learner import Learner
from .metrics import Accumulator
from .models import count_parameters
from .monitor import Monitor
from .optim import build_scheduler
from .progress import ProgressView, format_metrics
from .run_dir import RunDir
from .signals import StopRequested, stop_on_signals


@dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    from . import __version__

    return {"mltrain": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def _non_finite_message(step: int, lr: float, last_loss: float) -> str:
    return (f"training stopped: the loss became non-finite ({last_loss}) by step {step} at lr {lr:.3g}. "
            f"A learning rate too high is the usual cause; try optimizer.lr={lr / 10:.3g} "
            f"(--set optimizer.lr={lr / 10:.3g}). No checkpoint was written from these weights.")


def fit(cfg: Config, run_dir: str | Path | None = None, device: str | None = None,
        quiet: bool = False) -> FitResult:
    """Train as the config says; write the run directory; return it with its summary."""
    started = time.perf_counter()
    torch_device = pick_device(device or cfg.train.device)
    threads = set_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    view = ProgressView(quiet)
    run = RunDir.create(cfg.output.dir, cfg.name, run_dir)
    view.attach_log(run.log)
    run.write_config(dump_config(cfg))

    data = build_data(cfg.data, cfg.seed, torch_device)
    learner = Learner.build(cfg, data.spec, torch_device)
    x_train, y_train = data.splits["train"]
    steps_in_epoch = steps_per_epoch(len(y_train), cfg.data.batch_size)
    scheduler = build_scheduler(cfg.scheduler, learner.optimizer, steps_in_epoch * cfg.train.epochs)
    stopping = cfg.train.early_stopping
    monitor = Monitor(cfg.train.monitor, stopping.patience if stopping else None,
                      stopping.min_delta if stopping else 0.0)
    params = count_parameters(learner.model)

    summary: dict[str, Any] = {
        "status": "running", "epochs_completed": 0, "steps": 0, "best": monitor.best(), "final": {},
        "duration_s": 0.0, "train_samples_per_s": 0.0, "params": params, "device": str(torch_device),
        "threads": threads, "versions": versions(),
    }
    run.write_json("summary.json", summary)
    view.info(f"run {run.path}")
    view.info(f"data {cfg.data.dataset}: " + ", ".join(f"{name} {data.size(name)}" for name in data.splits)
              + f"; sample shape {tuple(data.spec.sample_shape)}"
              + (f"; {data.spec.num_classes} classes" if data.spec.num_classes else ""))
    view.info(f"model {cfg.model.arch} ({params:,} parameters), head {cfg.model.head}, "
              f"optimizer {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, device {torch_device}, "
              f"{threads} CPU thread{'s' if threads != 1 else ''}, precision {cfg.train.precision}")

    def checkpoint(epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": learner.model.state_dict(), "optimizer": learner.optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": learner.scaler.state_dict(),
            "epoch": epoch, "step": step, "config": config_to_dict(cfg), "data_state": data.state,
            "metrics": record, "monitor": monitor.best(), "rng": capture_rng(), "versions": versions(),
        }

    def finish(status: str, **extra: Any) -> None:
        summary.update(status=status, steps=step, best=monitor.best(),
                       duration_s=round(time.perf_counter() - started, 3),
                       train_samples_per_s=round(samples_seen / train_seconds, 1) if train_seconds else 0.0,
                       **extra)
        run.write_json("summary.json", summary)

    step, samples_seen, train_seconds, epoch = 0, 0, 0.0, 0
    log_every = cfg.train.log_every_steps
    try:
        with stop_on_signals() as stop:
            for epoch in range(1, cfg.train.epochs + 1):
                learner.model.train()
                totals = Accumulator(torch_device, learner.head.classifies)
                view.start_epoch(epoch, cfg.train.epochs, steps_in_epoch)
                epoch_started = time.perf_counter()
                for x, y in batches(x_train, y_train, cfg.data.batch_size, epoch_order(len(y_train), cfg.seed, epoch)):
                    loss, logits = learner.step(x, y)
                    scheduler.step()
                    totals.update(loss, learner.predictions(logits), y)
                    step += 1
                    view.advance()
                    if step % log_every == 0:  # the only mid-epoch host sync
                        running = totals.compute("train")["train/loss"]
                        if not math.isfinite(running):
                            raise TrainingFailed(_non_finite_message(step, scheduler.get_last_lr()[0], running))
                        view.show(running, scheduler.get_last_lr()[0],
                                  totals.count / (time.perf_counter() - epoch_started))
                    stop.check()
                epoch_seconds = time.perf_counter() - epoch_started
                train_seconds += epoch_seconds
                samples_seen += totals.count
                train_metrics = totals.compute("train")
                if not math.isfinite(train_metrics["train/loss"]):
                    raise TrainingFailed(_non_finite_message(step, scheduler.get_last_lr()[0],
                                                             train_metrics["train/loss"]))
                record: dict[str, Any] = {"epoch": epoch, "step": step, **train_metrics}
                if "val" in data.splits:
                    record.update(learner.evaluate(*data.splits["val"], "val")[0])
                record["lr"] = scheduler.get_last_lr()[0]
                record["epoch_time_s"] = round(epoch_seconds, 4)
                run.append_metrics(record)
                is_best = monitor.update(epoch, record)
                state = checkpoint(epoch, record)
                save_checkpoint(state, run.checkpoints / "last.pt")
                if is_best:
                    save_checkpoint(state, run.checkpoints / "best.pt")
                view.end_epoch()
                shown = {key: value for key, value in record.items() if "/" in key}
                view.info(f"epoch {epoch}/{cfg.train.epochs}  {format_metrics(shown)}  lr {record['lr']:.3g}  "
                          f"{totals.count / epoch_seconds:,.0f} samples/s  {epoch_seconds:.2f}s"
                          + ("  * best" if is_best else ""))
                summary.update(epochs_completed=epoch, final=record)
                reason = monitor.stop_reason()
                if reason:
                    view.info(reason)
                    summary["stopped_early"] = reason
                    break
    except TrainingFailed as failure:
        view.end_epoch()
        finish("failed", error=str(failure))
        raise
    except StopRequested:
        view.end_epoch()
        save_checkpoint(checkpoint(epoch, summary["final"]), run.checkpoints / "last.pt")
        finish("interrupted")
        view.info(f"interrupted at step {step}; checkpoint written to {run.checkpoints / 'last.pt'}", always=True)
        raise

    test = _score_best_on_test(learner, data, run)
    if test:
        summary["test"] = test
        view.info(f"test (best.pt, epoch {monitor.best_epoch})  {format_metrics(test)}")
    finish("completed")
    _plot(run)
    view.info(f"done in {summary['duration_s']:.1f}s; best {monitor.metric} {monitor.best_value:.4g} "
              f"at epoch {monitor.best_epoch}; run directory {run.path}", always=True)
    return FitResult(run.path, summary)


def _score_best_on_test(learner: Learner, data, run: RunDir) -> dict[str, float]:
    """The test split, scored once at the end with the best weights."""
    if "test" not in data.splits:
        return {}
    from .checkpoint import load_checkpoint

    best, _ = load_checkpoint(run.checkpoints / "best.pt")
    learner.model.load_state_dict(best["model"])
    return learner.evaluate(*data.splits["test"], "test")[0]


def _plot(run: RunDir) -> None:
    from .plots import plot_metrics

    plot_metrics(run.records, run.plots)
