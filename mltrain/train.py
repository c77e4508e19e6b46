"""fit(): the one training loop, from a resolved Config to a finished run directory."""

from __future__ import annotations

import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from .checkpoint import capture_rng, load_checkpoint, save_checkpoint
from .config import Config, config_to_dict, dump_config
from .data import InMemoryData, build_data
from .data.dataset import batches, epoch_order, steps_per_epoch
from .devices import pick_device, set_threads
from .errors import TrainingFailed
from .learner import Learner
from .metrics import Accumulator
from .models import count_parameters
from .monitor import Monitor
from .optim import LRSchedule
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


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels when asked; otherwise let cuDNN pick the fastest ones."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def versions() -> dict[str, str]:
    from . import __version__

    return {"mltrain": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def weights_for_eval(checkpoint: dict) -> dict:
    """The weights a checkpoint is scored with: its EMA when it has one."""
    return checkpoint["ema"]["weights"] if checkpoint.get("ema") else checkpoint["model"]


def grouped(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive groups of `size` items (the last may be shorter): the micro-batches of one step."""
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _non_finite_message(step: int, lr: float, loss: float, grad_norm: float | None) -> str:
    norm = f", last gradient norm {grad_norm:.4g}" if grad_norm is not None else ""
    return (f"training stopped: the loss became non-finite at step {step} (lr {lr:.3g}, recent loss {loss:.4g}"
            f"{norm}). A learning rate too high is the usual cause; try --set optimizer.lr={lr / 10:.3g}. "
            f"No checkpoint was written from these weights.")


def fit(cfg: Config, run_dir: str | Path | None = None, device: str | None = None,
        quiet: bool = False) -> FitResult:
    """Train as the config says; write the run directory; return it with its summary."""
    started = time.perf_counter()
    torch_device = pick_device(device or cfg.train.device)
    threads = set_threads(cfg.train.threads)
    configure_determinism(cfg.train.deterministic, torch_device)
    seed_everything(cfg.seed)
    view = ProgressView(quiet)
    run = RunDir.create(cfg.output.dir, cfg.name, run_dir)
    view.attach_log(run.log)
    run.write_config(dump_config(cfg))

    data = build_data(cfg.data, cfg.seed, torch_device)
    learner = Learner.build(cfg, data.spec, torch_device)
    x_train, y_train = data.splits["train"]
    micro_batches = steps_per_epoch(len(y_train), cfg.data.batch_size)
    steps_in_epoch = steps_per_epoch(micro_batches, cfg.train.accumulate)
    total_steps = cfg.train.max_steps or steps_in_epoch * cfg.train.epochs
    epochs = math.ceil(total_steps / steps_in_epoch)
    stopping = cfg.train.early_stopping
    monitor = Monitor(cfg.train.monitor, cfg.train.monitor_mode, stopping.patience if stopping else None,
                      stopping.min_delta if stopping else 0.0)
    schedule = LRSchedule(cfg.scheduler, learner.optimizer, total_steps, monitor.mode)
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
              f"optimizer {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {total_steps} steps, device {torch_device}, "
              f"{threads} CPU thread{'s' if threads != 1 else ''}, precision {cfg.train.precision}")

    step, epoch, samples_seen, train_seconds = 0, 0, 0, 0.0

    def checkpoint(record: dict[str, Any]) -> dict[str, Any]:
        return {**learner.state_dict(), "scheduler": schedule.state_dict(), "epoch": epoch, "step": step,
                "config": config_to_dict(cfg), "data_state": data.state, "metrics": record,
                "monitor": monitor.best(), "rng": capture_rng(), "versions": versions()}

    def ensure_finite(running_loss: float, grad_norm: float | None = None) -> None:
        """Called before anything is logged or saved: a bad step never reaches a checkpoint."""
        bad_step = learner.first_non_finite_step()
        if bad_step is not None or not math.isfinite(running_loss):
            raise TrainingFailed(_non_finite_message(bad_step or step, schedule.lr, running_loss, grad_norm))

    def validate(record: dict[str, Any]) -> bool:
        """Score the val split into `record`, update best.pt and the plateau schedule; True if best."""
        if "val" in data.splits:
            record.update(learner.evaluate(*data.splits["val"], "val")[0])
        record["lr"] = schedule.lr
        is_best = monitor.update(record, epoch, step)
        schedule.after_validation(record[monitor.metric])
        if is_best:
            save_checkpoint(checkpoint(record), run.checkpoints / "best.pt")
        return is_best

    def finish(status: str, **extra: Any) -> None:
        summary.update(status=status, steps=step, best=monitor.best(),
                       duration_s=round(time.perf_counter() - started, 3),
                       train_samples_per_s=round(samples_seen / train_seconds, 1) if train_seconds else 0.0,
                       **extra)
        run.write_json("summary.json", summary)

    try:
        with stop_on_signals() as stop:
            while step < total_steps and not summary.get("stopped_early"):
                epoch += 1
                totals = Accumulator(torch_device, learner.head.classifies)
                view.start_epoch(epoch, epochs, min(steps_in_epoch, total_steps - step))
                epoch_started = time.perf_counter()
                order = epoch_order(len(y_train), cfg.seed, epoch)
                for group in grouped(batches(x_train, y_train, cfg.data.batch_size, order), cfg.train.accumulate):
                    for x, y in group:
                        loss, logits = learner.backward(x, y, scale=1.0 / len(group))
                        totals.update(loss, learner.predictions(logits), y)
                    log_now = (step + 1) % cfg.train.log_every_steps == 0
                    grad_norm = learner.update(want_grad_norm=log_now)
                    schedule.after_step()
                    step += 1
                    view.advance()
                    if log_now:  # the only per-interval host sync
                        running = totals.compute("train")
                        norm = float(grad_norm)
                        ensure_finite(running["train/loss"], norm)
                        run.append_step_record({"epoch": epoch, "step": step, "train/loss": running["train/loss"],
                                                "lr": schedule.lr, "grad_norm": norm})
                        view.show(running["train/loss"], schedule.lr,
                                  totals.count / (time.perf_counter() - epoch_started))
                    if cfg.train.val_every_steps and step % cfg.train.val_every_steps == 0 \
                            and step % steps_in_epoch and step < total_steps:
                        ensure_finite(totals.compute("train")["train/loss"])
                        record = {"epoch": epoch, "step": step}
                        best = validate(record)
                        run.append_step_record(record)
                        view.info(f"step {step}  {format_metrics(record)}" + ("  * best" if best else ""))
                        if monitor.stop_reason():
                            break
                    stop.check()
                    if step >= total_steps:
                        break
                epoch_seconds = time.perf_counter() - epoch_started
                train_seconds += epoch_seconds
                samples_seen += totals.count
                train_metrics = totals.compute("train")
                ensure_finite(train_metrics["train/loss"])
                record = {"epoch": epoch, "step": step, **train_metrics}
                is_best = validate(record)
                record["epoch_time_s"] = round(epoch_seconds, 4)
                run.append_metrics(record)
                save_checkpoint(checkpoint(record), run.checkpoints / "last.pt")
                view.end_epoch()
                shown = {key: value for key, value in record.items() if "/" in key}
                view.info(f"epoch {epoch}/{epochs}  {format_metrics(shown)}  lr {record['lr']:.3g}  "
                          f"{totals.count / epoch_seconds:,.0f} samples/s  {epoch_seconds:.2f}s"
                          + ("  * best" if is_best else ""))
                summary.update(epochs_completed=epoch, final=record)
                reason = monitor.stop_reason()
                if reason:
                    view.info(reason)
                    summary["stopped_early"] = reason
    except TrainingFailed as failure:
        view.end_epoch()
        finish("failed", error=str(failure))
        raise
    except StopRequested:
        view.end_epoch()
        ensure_finite(0.0)
        save_checkpoint(checkpoint(summary["final"]), run.checkpoints / "last.pt")
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


def _score_best_on_test(learner: Learner, data: InMemoryData, run: RunDir) -> dict[str, float]:
    """The test split, scored once at the end with the best weights."""
    if "test" not in data.splits:
        return {}
    best, _ = load_checkpoint(run.checkpoints / "best.pt")
    learner.eval_model.load_state_dict(weights_for_eval(best))
    return learner.evaluate(*data.splits["test"], "test")[0]


def _plot(run: RunDir) -> None:
    from .plots import plot_metrics

    plot_metrics(run.records, run.plots)
