"""fit(): the one training loop, from a resolved Config to a finished run directory."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from .checkpoint import (
    capture_rng, load_checkpoint, restore_rng, run_directory_of, save_checkpoint, weights_for_eval,
)
from .config import Config, config_from_dict, config_to_dict, dump_config, get_key, load_config
from .data import InMemoryData
from .data.dataset import batches, epoch_order, steps_per_epoch
from .devices import pick_device
from .errors import StopTraining, TrainingFailed, UserError
from .learner import Learner
from .metrics import Accumulator, samples_per_s
from .models import count_parameters
from .monitor import Monitor
from .optim import LRSchedule
from .progress import ProgressView, format_metrics
from .run_dir import RunDir
from .setup import prepare
from .signals import StopRequested, stop_on_signals
from .sinks import Sink


@dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]


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


def _non_finite_message(step: int, lr: float, peak_lr: float, loss: float, grad_norm: float | None) -> str:
    norm = f", last gradient norm {grad_norm:.4g}" if grad_norm is not None else ""
    return (f"training stopped: the loss became non-finite at step {step} (lr {lr:.3g}, recent loss {loss:.4g}"
            f"{norm}). A learning rate too high is the usual cause; try --set optimizer.lr={peak_lr / 10:.3g}. "
            f"No checkpoint was written from these weights.")


def fit(cfg: Config, run_dir: str | Path | None = None, device: str | None = None,
        quiet: bool = False, sinks: Iterable[Sink] = ()) -> FitResult:
    """Train as the config says; write a new run directory; return it with its summary.
    A sink may end the run on purpose with StopTraining, which reaches the caller."""
    torch_device = pick_device(device or cfg.train.device)
    run = RunDir.create(cfg.output.dir, cfg.name, run_dir)
    try:
        training = Training(cfg, run, torch_device, quiet, sinks=sinks)
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # bad data or model: leave no empty run behind
        raise
    return training.run()


# What --set may not change on resume: it would make the checkpoint describe another run, or
# not fit its optimizer state (a weight-decay change regroups the parameters).
_FIXED_ON_RESUME = ("seed", "data", "model", "optimizer", "scheduler.name", "train.accumulate")


def resume(target: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
           quiet: bool = False) -> FitResult:
    """Continue a run from its last.pt (or the given checkpoint) in its own run directory.
    A run stopped before its first checkpoint starts again from its config.yaml."""
    target = Path(target)
    if target.is_dir() and (target / "config.yaml").is_file() and not (target / "checkpoints/last.pt").exists():
        cfg = load_config(target / "config.yaml", overrides)
        return Training(cfg, RunDir(target), pick_device(device or cfg.train.device), quiet, resuming=True).run()
    checkpoint, path = load_checkpoint(target, prefer=("last.pt",))
    run_path = run_directory_of(path)
    if run_path is None:
        raise UserError(f"{path}: --resume needs a checkpoint inside its run directory "
                        "(<run>/checkpoints/last.pt), where the run's metrics and log continue")
    original = config_from_dict(checkpoint["config"], source=str(path))
    cfg = config_from_dict(checkpoint["config"], overrides, source=str(path))
    for key in _FIXED_ON_RESUME:
        if get_key(cfg, key) != get_key(original, key):
            raise UserError(f"--set {key}: resuming cannot change {key} (the checkpoint was trained with "
                            f"{get_key(original, key)!r}); start a new run with `mltrain fit` instead")
    torch_device = pick_device(device or cfg.train.device)
    return Training(cfg, RunDir(run_path), torch_device, quiet, checkpoint, resuming=True).run()


class Training:
    """One run of the loop, fresh or resumed from a checkpoint: `run()` reads top to bottom."""

    def __init__(self, cfg: Config, run: RunDir, device: torch.device, quiet: bool,
                 checkpoint: dict | None = None, resuming: bool = False, sinks: Iterable[Sink] = ()):
        """Builds and restores everything; writes nothing until `run()`, so a refused resume
        leaves the run directory as it was."""
        self.started = time.perf_counter()
        self.cfg, self.run_dir, self.device, self.resuming = cfg, run, device, resuming
        self.sinks = list(sinks)
        configure_determinism(cfg.train.deterministic, device)
        self.view = ProgressView(quiet)
        prepared = prepare(cfg, device, checkpoint.get("data_state") if checkpoint else None)
        self.data, self.learner, self.threads = prepared.data, prepared.learner, prepared.threads
        micro_batches = steps_per_epoch(self.data.size("train"), cfg.data.batch_size)
        self.steps_in_epoch = steps_per_epoch(micro_batches, cfg.train.accumulate)
        self.total_steps = cfg.train.max_steps or self.steps_in_epoch * cfg.train.epochs
        self.epochs = math.ceil(self.total_steps / self.steps_in_epoch)
        stopping = cfg.train.early_stopping
        self.monitor = Monitor(cfg.train.monitor, cfg.train.monitor_mode, stopping.patience if stopping else None,
                               stopping.min_delta if stopping else 0.0)
        self.schedule = LRSchedule(cfg.scheduler, self.learner.optimizer, self.total_steps, self.monitor.mode)
        self.totals = Accumulator(device, self.learner.head.classifies)  # of the current epoch

        # Where the run stands; a checkpoint holds all of it.
        self.step = self.epoch = self.samples_seen = 0
        self.epoch_step = self.steps_in_epoch  # optimizer steps done in `epoch`; full: start the next
        self.epoch_seconds = self.train_seconds = self.elapsed_before = 0.0
        self.summary: dict[str, Any] = {
            "status": "running", "epochs_completed": 0, "steps": 0, "best": self.monitor.best(), "final": {},
            "duration_s": 0.0, "train_samples_per_s": 0.0, "params": count_parameters(self.learner.model),
            "device": str(device), "threads": self.threads, "versions": versions(),
        }
        if checkpoint is not None:
            self._restore(checkpoint)

    def _restore(self, checkpoint: dict) -> None:
        try:
            self.learner.load_state_dict(checkpoint)
        except (RuntimeError, ValueError, KeyError) as error:
            raise UserError(f"{self.run_dir.path}: the checkpoint does not fit the model and optimizer its "
                            f"config builds: {str(error).splitlines()[0]}") from None
        self.schedule.load_state_dict(checkpoint["scheduler"])
        self.monitor.load_state_dict(checkpoint["monitor"])
        self.totals.load_state_dict(checkpoint["epoch_totals"])
        progress = checkpoint["progress"]
        self.step, self.epoch, self.epoch_step = checkpoint["step"], checkpoint["epoch"], progress["epoch_step"]
        self.samples_seen, self.epoch_seconds = progress["samples_seen"], progress["epoch_seconds"]
        self.train_seconds, self.elapsed_before = progress["train_seconds"], progress["elapsed_s"]
        self.summary.update(epochs_completed=progress["epochs_completed"], final=checkpoint["metrics"],
                            best=self.monitor.best(), **({"stopped_early": progress["stopped_early"]}
                                                         if progress["stopped_early"] else {}))
        restore_rng(checkpoint["rng"])
        if progress["stopped_early"] or self.step >= self.total_steps:
            why = progress["stopped_early"] or f"it finished its {self.total_steps} steps"
            longer = f"train.max_steps={self.total_steps * 2}" if self.cfg.train.max_steps \
                else f"train.epochs={self.epochs + 10}"
            raise UserError(f"{self.run_dir.path}: nothing to resume: {why}. To train longer, extend it, "
                            f"e.g. --set {longer}" + (" and a larger early_stopping.patience"
                                                      if progress["stopped_early"] else ""))

    def run(self) -> FitResult:
        cfg, learner, view = self.cfg, self.learner, self.view
        if self.resuming:
            self.run_dir.cut_back(self.step)
        view.attach_log(self.run_dir.log)
        self.run_dir.write_config(dump_config(cfg))
        self.run_dir.write_json("summary.json", self.summary)
        self._announce()
        x_train, y_train = self.data.splits["train"]
        per_step = cfg.train.accumulate * cfg.data.batch_size  # samples per optimizer step
        try:
            with stop_on_signals() as stop:
                while self.step < self.total_steps and not self.summary.get("stopped_early"):
                    if self.epoch_step == self.steps_in_epoch:
                        self.epoch += 1
                        self.epoch_step, self.epoch_seconds = 0, 0.0
                        self.totals = Accumulator(self.device, learner.head.classifies)
                    view.start_epoch(self.epoch, self.epochs, self.steps_in_epoch, done=self.epoch_step)
                    resumed_at = time.perf_counter() - self.epoch_seconds
                    order = epoch_order(len(y_train), cfg.seed, self.epoch)[self.epoch_step * per_step:]
                    for group in grouped(batches(x_train, y_train, cfg.data.batch_size, order), cfg.train.accumulate):
                        stop.check()
                        for x, y in group:
                            loss, logits = learner.backward(x, y, scale=1.0 / len(group))
                            self.totals.update(loss, learner.predictions(logits), y)
                        log_now = (self.step + 1) % cfg.train.log_every_steps == 0
                        grad_norm = learner.update(want_grad_norm=log_now)
                        self.schedule.after_step()
                        self.step += 1
                        self.epoch_step += 1
                        self.epoch_seconds = time.perf_counter() - resumed_at
                        view.advance()
                        if log_now:
                            self._log_step(float(grad_norm))
                        if cfg.train.val_every_steps and self.step % cfg.train.val_every_steps == 0 \
                                and self.epoch_step < self.steps_in_epoch:
                            self._validate_mid_epoch()
                        if cfg.train.checkpoint_every_steps and self.step % cfg.train.checkpoint_every_steps == 0 \
                                and self.epoch_step < self.steps_in_epoch:
                            self._ensure_finite(self.totals.compute("train")["train/loss"])
                            self._save_last()
                        if self.step >= self.total_steps or self.monitor.stop_reason():
                            break
                    self._end_epoch()
        except TrainingFailed as failure:
            view.end_epoch()
            self._finish("failed", error=str(failure))
            raise
        except StopTraining as stop:
            view.end_epoch()
            self._save_last()
            self._finish(stop.status, stopped=stop.reason)
            for sink in self.sinks:
                sink.finish(self.summary)
            raise
        except StopRequested:
            view.end_epoch()
            try:
                self._ensure_finite(self.totals.compute("train")["train/loss"])
            except TrainingFailed as failure:
                self._finish("failed", error=str(failure))
                raise
            self._save_last()
            self._finish("interrupted")
            view.info(f"interrupted at step {self.step}; to continue: mltrain fit --resume {self.run_dir.path}",
                      always=True)
            raise
        except BaseException as error:  # a second Ctrl-C, a data error mid-run, out of memory...
            view.end_epoch()
            interrupted = isinstance(error, KeyboardInterrupt)
            self._finish("interrupted" if interrupted else "failed",
                         **({} if interrupted else {"error": str(error).splitlines()[0] if str(error) else
                                                    type(error).__name__}))
            raise

        test = _score_best_on_test(learner, self.data, self.run_dir)
        if test:
            self.summary["test"] = test
            view.info(f"test (best.pt, epoch {self.monitor.best_epoch})  {format_metrics(test)}")
        self._finish("completed")
        _plot(self.run_dir)
        view.info(f"done in {self.summary['duration_s']:.1f}s; best {self.monitor.metric} "
                  f"{self.monitor.best_value:.4g} at epoch {self.monitor.best_epoch}; "
                  f"run directory {self.run_dir.path}", always=True)
        return FitResult(self.run_dir.path, self.summary)

    def _announce(self) -> None:
        cfg, data, view = self.cfg, self.data, self.view
        view.info(f"run {self.run_dir.path}" + (f" (resumed at step {self.step})" if self.step else ""))
        view.info(f"data {cfg.data.dataset}: " + ", ".join(f"{name} {data.size(name)}" for name in data.splits)
                  + f"; sample shape {tuple(data.spec.sample_shape)}"
                  + (f"; {data.spec.num_classes} classes" if data.spec.num_classes else ""))
        view.info(data.describe())
        view.info(f"model {cfg.model.arch} ({self.summary['params']:,} parameters), head {cfg.model.head}, "
                  f"optimizer {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {self.total_steps} steps, "
                  f"device {self.device}, {self.threads} CPU thread{'s' if self.threads != 1 else ''}, "
                  f"precision {cfg.train.precision}")

    def _log_step(self, grad_norm: float) -> None:
        """Every log_every_steps: the one mid-epoch host sync, a NaN check and a step record."""
        running = self.totals.compute("train")["train/loss"]
        self._ensure_finite(running, grad_norm)
        self.run_dir.append_step_record({"epoch": self.epoch, "step": self.step, "train/loss": running,
                                         "lr": self.schedule.lr, "grad_norm": grad_norm})
        self.view.show(running, self.schedule.lr, samples_per_s(self.totals.count, self.epoch_seconds))

    def _validate_mid_epoch(self) -> None:
        self._ensure_finite(self.totals.compute("train")["train/loss"])
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, **self.totals.compute("train")}
        best = self._validate(record)
        self.run_dir.append_step_record(record)
        self.view.info(f"step {self.step}  {format_metrics(record)}" + ("  * best" if best else ""))
        for sink in self.sinks:
            sink.validation(record)

    def _end_epoch(self) -> None:
        """The epoch's record, validation, last.pt (and best.pt), the summary line."""
        self.train_seconds += self.epoch_seconds
        self.samples_seen += self.totals.count
        train_metrics = self.totals.compute("train")
        self._ensure_finite(train_metrics["train/loss"])
        record: dict[str, Any] = {"epoch": self.epoch, "step": self.step, **train_metrics}
        is_best = self._validate(record)
        self.run_dir.append_metrics(record)
        self.summary.update(epochs_completed=self.epoch, final=record)
        reason = self.monitor.stop_reason()
        if reason:
            self.summary["stopped_early"] = reason
        save_checkpoint(self._checkpoint(record), self.run_dir.checkpoints / "last.pt")
        self.view.end_epoch()
        shown = {key: value for key, value in record.items() if "/" in key}
        self.view.info(f"epoch {self.epoch}/{self.epochs}  {format_metrics(shown)}  lr {record['lr']:.3g}  "
                       f"{samples_per_s(self.totals.count, self.epoch_seconds):,.0f} samples/s  "
                       f"{self.epoch_seconds:.2f}s" + ("  * best" if is_best else ""))
        if reason:
            self.view.info(reason)
        for sink in self.sinks:
            sink.validation(record)

    def _validate(self, record: dict[str, Any]) -> bool:
        """Score the val split into `record`, update best.pt and the plateau schedule; True if best."""
        if "val" in self.data.splits:
            record.update(self.learner.evaluate(*self.data.splits["val"], "val"))
        record["lr"] = self.schedule.lr
        is_best = self.monitor.update(record, self.epoch, self.step)
        self.schedule.after_validation(record[self.monitor.metric])
        if is_best:
            save_checkpoint(self._checkpoint(record), self.run_dir.checkpoints / "best.pt")
        return is_best

    def _ensure_finite(self, running_loss: float, grad_norm: float | None = None) -> None:
        """Called before anything is logged or saved: a bad step never reaches a checkpoint."""
        bad_step = self.learner.first_non_finite_step()
        if bad_step is not None or not math.isfinite(running_loss):
            raise TrainingFailed(_non_finite_message(bad_step or self.step, self.schedule.lr, self.cfg.optimizer.lr,
                                                     running_loss, grad_norm))

    def _checkpoint(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.learner.state_dict(), "scheduler": self.schedule.state_dict(), "epoch": self.epoch,
            "step": self.step, "config": config_to_dict(self.cfg), "data_state": self.data.state,
            "metrics": record, "monitor": self.monitor.state_dict(), "epoch_totals": self.totals.state_dict(),
            "progress": {"epoch_step": self.epoch_step, "epochs_completed": self.summary["epochs_completed"],
                         "samples_seen": self.samples_seen, "epoch_seconds": self.epoch_seconds,
                         "train_seconds": self.train_seconds, "elapsed_s": self._elapsed(),
                         "stopped_early": self.summary.get("stopped_early")},
            "rng": capture_rng(), "versions": versions(),
        }

    def _save_last(self) -> None:
        """last.pt in the middle of an epoch: its metrics are those of the last finished epoch."""
        save_checkpoint(self._checkpoint(self.summary["final"]), self.run_dir.checkpoints / "last.pt")

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def _finish(self, status: str, **extra: Any) -> None:
        """Write the final summary.json (best effort when the run failed: the disk may be full)."""
        self.summary.update(
            status=status, steps=self.step, best=self.monitor.best(), duration_s=round(self._elapsed(), 3),
            train_samples_per_s=round(samples_per_s(self.samples_seen, self.train_seconds), 1),
            **extra)
        with contextlib.suppress(OSError) if status == "failed" else contextlib.nullcontext():
            if status == "failed":
                self.run_dir.log(f"failed: {self.summary['error']}")  # train.log keeps what stderr showed
            self.run_dir.write_json("summary.json", self.summary)


def _score_best_on_test(learner: Learner, data: InMemoryData, run: RunDir) -> dict[str, float]:
    """The test split, scored once at the end with the best weights."""
    if "test" not in data.splits:
        return {}
    best, _ = load_checkpoint(run.checkpoints / "best.pt")
    learner.eval_model.load_state_dict(weights_for_eval(best))
    return learner.evaluate(*data.splits["test"], "test")


def _plot(run: RunDir) -> None:
    from .plots import plot_metrics

    plot_metrics(run.records, run.plots)
