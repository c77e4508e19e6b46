"""fit(): the one training loop, from a resolved Config to a finished run directory."""

from __future__ import annotations

import math
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from .checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint, spec_state
from .config import Config, config_to_dict, load_config
from .data import DataSplits
from .data.dataset import batches, epoch_order, shard
from .devices import pick_device
from .distributed import Distributed
from .errors import RunComplete, StopTraining, TrainingFailed, UserError
from .learner import Learner
from .metrics import Accumulator, samples_per_s
from .models import count_parameters
from .monitor import Monitor
from .optim import LRSchedule, run_length
from .position import Position, Renumbering
from .console import ProgressView
from .restore import DAMAGED, Restored, check_numbers, load_eval_weights, loading_state, restore
from .run_dir import RunDir
from .startup import prepare
from .signals import StopRequested, stop_on_signals
from .sinks import Record, RunStart, Sink
from .sinks.loggers import logger_sinks
from .sinks.progress import Progress
from .sinks.run_files import RunFiles


STOP_AGREED_EVERY = 8  # steps between the processes' agreement on a stop request (one all-reduce each)


@dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]


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


def fit(cfg: Config, run_dir: str | Path | None = None, device: str | None = None, quiet: bool = False,
        sinks: Sequence[Sink] = ()) -> FitResult:
    """Train as the config says; write a new run directory; return it with its summary.
    `sinks` also receive the loop's records, after the run files and the progress view.
    Under torchrun (WORLD_SIZE > 1) every process trains its shard; rank 0 writes the run."""
    job = Distributed.from_env()
    torch_device = job.device_for(pick_device(device or cfg.train.device))
    with (stop_on_signals(at_once=True),  # start-up writes nothing that matters: a stop ends it at once
          job.joined(torch_device),
          _shared(job, lambda: RunDir.create(cfg.output.dir, cfg.name, run_dir)) as run):
        try:
            prepared = prepare(cfg, torch_device, job.local_world_size)
            training = Training(cfg, run, prepared.data, prepared.learner, prepared.threads, quiet, sinks, job=job)
        except BaseException:
            if job.is_main:
                shutil.rmtree(run.path, ignore_errors=True)  # bad data or model, or a stop: leave no run behind
            raise
        return training.run()  # which waits for the end of a step or of a write to stop


def resume(target: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
           quiet: bool = False, sinks: Sequence[Sink] = ()) -> FitResult:
    """Continue a run from its last.pt (or the given checkpoint) in its own run directory.
    A run stopped before its first checkpoint starts again from its config.yaml."""
    target = Path(target)
    job = Distributed.from_env()
    with stop_on_signals(at_once=True):  # start-up writes nothing: a stop ends it at once
        if target.is_dir() and (target / "config.yaml").is_file() and not (target / "checkpoints/last.pt").exists():
            cfg = load_config(target / "config.yaml", overrides)
            torch_device = job.device_for(pick_device(device or cfg.train.device))
            with job.joined(torch_device), _shared(job, lambda: RunDir.reopen(target)) as run:
                prepared = prepare(cfg, torch_device, job.local_world_size)
                training = Training(cfg, run, prepared.data, prepared.learner, prepared.threads, quiet, sinks, job=job)
                return training.run()
        restored = restore(target, prefer=("last.pt",), device=device, overrides=overrides, resume=True)
        if restored.run_dir is None:
            raise UserError(f"{restored.path}: --resume needs a checkpoint inside its run directory "
                            "(<run>/checkpoints/last.pt), where the run's metrics and log continue")
        with job.joined(restored.learner.device), _shared(job, lambda: RunDir.reopen(restored.run_dir)) as run:
            training = Training(restored.cfg, run, restored.data(), restored.learner, restored.threads, quiet, sinks,
                                restored, job=job)
            return training.run()


def _shared(job: Distributed, create: Callable[[], RunDir]) -> RunDir:
    """Rank 0 makes (or reopens) the run directory and holds it; every rank learns its path, or
    rank 0's error."""
    if not job.enabled:
        return create()
    made, error = None, None
    if job.is_main:
        try:
            made = create()
        except UserError as refused:
            error = str(refused)
    path, error = job.broadcast((str(made.path) if made else None, error))
    if error is not None:
        raise UserError(error)
    return made or RunDir(Path(path))


class Training:
    """One run of the loop, fresh or resumed from a checkpoint: `run()` reads top to bottom."""

    def __init__(self, cfg: Config, run: RunDir, data: DataSplits, learner: Learner, threads: int,
                 quiet: bool = False, sinks: Sequence[Sink] = (), restored: Restored | None = None,
                 job: Distributed = Distributed()):
        """With `restored`, continues where its checkpoint stood. Writes nothing until `run()`,
        so a refused resume leaves the run directory as it was. With a `job` of several processes,
        each trains its shard of every global batch through DDP; rank 0 alone writes and prints."""
        self.cfg, self.run_dir, self.data, self.learner, self.threads = cfg, run, data, learner, threads
        self.job, self.device = job, learner.device
        if job.enabled:
            learner.distribute(cfg.train.sync_batchnorm)
            torch.manual_seed(cfg.seed * 1_000_003 + job.rank)  # dropout differs per process; weights did not
        steps_in_epoch, self.total_steps = run_length(data.size("train"), cfg.data.batch_size, cfg.train.accumulate,
                                                      cfg.train.epochs, cfg.train.max_steps, job.world_size)
        self.position = Position(steps_in_epoch)
        self.epochs = math.ceil(self.total_steps / self.position.steps_in_epoch)
        stopping = cfg.train.early_stopping
        self.monitor = Monitor(cfg.train.monitor, cfg.train.monitor_mode, stopping.patience if stopping else None,
                               stopping.min_delta if stopping else 0.0)
        if restored is not None:  # a schedule starts from the initial lrs; _restore replays it to the step
            for group in learner.optimizer.param_groups:
                group["lr"] = group.get("initial_lr", group["lr"])
        self.schedule = LRSchedule(cfg.scheduler, learner.optimizer, self.total_steps, self.monitor.mode)
        self.totals = self._accumulator()  # of the epoch in progress
        self.final: Record = {}  # the record of the last completed epoch
        self.renumbering: Renumbering | None = None  # resumed with another number of processes
        self.last_validation: Record = {}

        view = ProgressView(quiet or not job.is_main)
        self.progress = Progress(view, self.monitor)
        self.sinks: list[Sink] = []
        if job.is_main:
            files = RunFiles(run)
            view.attach_log(files.log)
            self.sinks = [files, self.progress, *logger_sinks(cfg, run.path), *sinks]
        self.started: list[Sink] = []  # the sinks whose start() ran: they are the ones to finish()
        if restored is not None:
            self._restore(restored)

    def _restore(self, restored: Restored) -> None:
        """The loop's own state from the checkpoint (`restored.learner` holds the rest)."""
        checkpoint, path = restored.checkpoint, restored.path
        saved_processes = checkpoint.get("world_size", 1)
        with loading_state(path, "the position in the run"):
            if saved_processes != self.job.world_size:
                checkpoint = self._rescaled(checkpoint, saved_processes)
            self.position.load_state_dict(checkpoint["position"])
        scheduled = checkpoint["scheduler"].get("steps") if isinstance(checkpoint["scheduler"], dict) else None
        if not scheduled == self.position.step == self.learner.steps:
            raise UserError(f"{path}: the schedule ({scheduled!r} steps), the position (step {self.position.step}) "
                            f"and the optimizer ({self.learner.steps} steps) disagree; {DAMAGED}")
        check_numbers("the monitor state", self.monitor.state_dict(), checkpoint["monitor"], path)
        with loading_state(path, "the schedule, the running sums of the epoch and the RNG states"):
            self.schedule.load_state_dict(checkpoint["scheduler"])
            self.totals.load_state_dict(checkpoint["epoch_totals"])
            restore_rng(checkpoint["rng"])
            per_process = checkpoint.get("per_process")
            if per_process and len(per_process) == self.job.world_size:
                own = per_process[self.job.rank]
                restore_rng(own["rng"])
                self.totals.load_state_dict(own["epoch_totals"])
                if self.data.augment is not None and own["augment"] is not None:
                    self.data.augment.load_state_dict(own["augment"])
        self.monitor.load_state_dict(checkpoint["monitor"])
        self.final = checkpoint["metrics"] if isinstance(checkpoint["metrics"], dict) else {}
        if self.position.stopped or self.position.step >= self.total_steps:
            early = self.monitor.stop_reason() is not None
            if self.position.stopped and not early:  # a sink stopped it on purpose (a pruned trial)
                raise UserError(f"{self.run_dir.path}: nothing to resume: it was stopped ({self.position.stopped})")
            if self.run_dir.read_summary().get("status") != "completed":
                return  # stopped after its last checkpoint: run() scores the test split and finishes it
            why = self.position.stopped or f"it finished its {self.total_steps} steps"
            longer = f"train.max_steps={self.total_steps * 2}" if self.cfg.train.max_steps \
                else f"train.epochs={self.epochs + 10}"
            raise RunComplete(f"{self.run_dir.path} is already complete: {why}. To train longer, extend it, "
                              f"e.g. --set {longer}" + (" and a larger early_stopping.patience" if early else ""))

    def _rescaled(self, checkpoint: dict[str, Any], saved_processes: int) -> dict[str, Any]:
        """The checkpoint's position counted in this job's optimizer steps: a run resumed with
        another number of processes takes other global batches, so the data order changes from
        here (the samples the epoch had consumed are not shown again)."""
        if not isinstance(saved_processes, int) or saved_processes < 1:
            raise ValueError(f"world_size {saved_processes!r}")
        state = dict(checkpoint["position"])
        per_step = self.cfg.train.accumulate * self.cfg.data.batch_size
        saved_in_epoch, _ = run_length(self.data.size("train"), self.cfg.data.batch_size, self.cfg.train.accumulate,
                                       1, None, saved_processes)
        self.renumbering = Renumbering(state["step"], saved_in_epoch, self.position.steps_in_epoch,
                                       per_step * saved_processes, per_step * self.job.world_size)
        state["epoch_step"] = self.renumbering.epoch_step(state["epoch_step"])
        state["step"] = self.renumbering.step(state["epoch"], state["step"])
        self.learner.steps = state["step"]
        if self.job.is_main:
            print(f"resuming with {self.job.world_size} process(es) a run last trained with {saved_processes}: "
                  f"the global batch is now {per_step * self.job.world_size} and the data order changes from "
                  f"step {state['step']}")
        return {**checkpoint, "position": state, "step": state["step"], "per_process": None,
                "scheduler": {**checkpoint["scheduler"], "steps": state["step"]}}

    def run(self) -> FitResult:
        cfg, learner, position, job = self.cfg, self.learner, self.position, self.job
        x_train, y_train = self.data.splits["train"]
        per_step = cfg.train.accumulate * cfg.data.batch_size * job.world_size  # samples per optimizer step
        try:
            with stop_on_signals() as stop:
                self._start()
                while position.step < self.total_steps and not position.stopped:
                    if position.epoch_done:
                        position.next_epoch()
                        self.totals = self._accumulator()
                    position.start_clock()
                    order = epoch_order(len(y_train), cfg.seed, position.epoch)[position.epoch_step * per_step:]
                    order, global_sizes = shard(order, cfg.data.batch_size, job.world_size, job.rank)
                    micro_batches = zip(batches(x_train, y_train, cfg.data.batch_size, order), global_sizes)
                    for group in grouped(micro_batches, cfg.train.accumulate):
                        if not job.enabled:
                            stop.check()
                        elif position.step % STOP_AGREED_EVERY == 0 and job.any(stop.requested, self.device):
                            raise StopRequested(stop.signal_name or "a stop on another process")
                        for index, ((x, y), global_size) in enumerate(group):
                            # This process's share of the global batch's mean loss, of the step's micro-batches.
                            share = len(y) * job.world_size / global_size / len(group)
                            with learner.accumulating(last=index == len(group) - 1):
                                loss, logits = learner.forward_backward(x, y, scale=share)
                            self.totals.update(loss, logits, y)
                        log_now = (position.step + 1) % cfg.train.log_every_steps == 0
                        grad_norm = learner.update(want_grad_norm=log_now)
                        self.schedule.after_step()
                        position.advance()
                        if log_now:
                            self._log_step(float(grad_norm))
                        elif job.is_main and self.progress.due():  # the live view only, about twice a second
                            self.progress.step(self._step_record(this_process_only=True))
                        if position.epoch_done or position.step >= self.total_steps:
                            break
                        if _every(cfg.train.val_every_steps, position.step):
                            self._validate_mid_epoch()
                            if position.stopped:
                                break
                        if _every(cfg.train.checkpoint_every_steps, position.step):
                            self._save_last()
                    self._end_epoch()
                test = self._test()
                stop.check()
        except TrainingFailed as failure:
            self._finish("failed", error=str(failure))
            raise
        except StopRequested:
            if position.step >= self.total_steps or position.stopped:  # stopped while scoring the test split:
                self._finish("interrupted")  # last.pt holds the end already (the learner, best.pt's weights)
            else:
                self._stop_with_checkpoint("interrupted")
            raise
        except StopTraining as stopped:
            position.stopped = f"{stopped.status}: {stopped.reason}"
            self._stop_with_checkpoint(stopped.status, stopped=stopped.reason)
            raise
        except BaseException as error:  # a second Ctrl-C, a data error mid-run, out of memory...
            interrupted = isinstance(error, KeyboardInterrupt)
            self._finish("interrupted" if interrupted else "failed",
                         **({} if interrupted else {"error": str(error).splitlines()[0] if str(error) else
                                                    type(error).__name__}))
            raise
        finally:
            self.data.close()
        summary = self._finish("completed", **test)
        stop.check()  # a stop while the summary and plots were written: they were finished first
        return FitResult(self.run_dir.path, summary)

    def _start(self) -> None:
        run = RunStart(self.cfg, self.run_dir.path, self.position.step, self.total_steps, self.epochs,
                       self.position.steps_in_epoch, self.renumbering)
        for sink in self.sinks:
            sink.start(run)
            self.started.append(sink)
        cfg, data, info = self.cfg, self.data, self.progress.info
        info(f"run {self.run_dir.path}" + (f" (resumed at step {self.position.step})" if self.position.step else ""))
        info(f"data {cfg.data.dataset}: " + ", ".join(f"{name} {data.size(name)}" for name in data.splits)
             + f"; sample shape {tuple(data.spec.sample_shape)}"
             + (f"; {data.spec.num_classes} classes" if data.spec.num_classes else ""))
        info(data.describe())
        info(f"model {cfg.model.arch} ({count_parameters(self.learner.model):,} parameters), head {cfg.model.head}, "
             f"optimizer {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {self.total_steps} steps, "
             f"device {self.device}, {self.threads} CPU thread{'s' if self.threads != 1 else ''}, "
             f"precision {cfg.train.precision}")
        if self.job.enabled:
            info(f"{self.job.world_size} processes: batch {cfg.data.batch_size} each, global batch "
                 f"{cfg.data.batch_size * cfg.train.accumulate * self.job.world_size} per optimizer step")
        if cfg.train.preflight and self.position.step == 0 and self.job.is_main:
            self._cheap_preflight()

    def _cheap_preflight(self) -> None:
        """The pre-flight checks that cost nothing (data, loss at init, schedule): warnings only."""
        from .checks.preflight import run_cheap_checks

        for check in run_cheap_checks(self.cfg, self.data, self.learner):
            if check.status in ("warn", "fail"):
                self.progress.info(f"pre-flight {check.status.upper()}: {check.name}: {check.detail}"
                                   + (f"; {check.fix}" if check.fix else ""))

    def _step_record(self, grad_norm: float | None = None, this_process_only: bool = False) -> Record:
        """Where training stands: the running loss of the epoch (one host sync; over every process,
        unless `this_process_only` for the live view), lr, throughput."""
        loss = self.totals.compute("train", across_processes=not this_process_only)["train/loss"]
        record: Record = {"epoch": self.position.epoch, "step": self.position.step, "train/loss": loss,
                          "lr": self.schedule.lr}
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        record["samples_per_s"] = samples_per_s(self.totals.count * self.job.world_size, self.position.epoch_seconds)
        return record

    def _log_step(self, grad_norm: float) -> None:
        """Every log_every_steps: a NaN check and a step record for every sink."""
        record = self._step_record(grad_norm)
        self._ensure_finite(record["train/loss"], grad_norm)
        for sink in self.sinks:
            sink.step(record)

    def _validate_mid_epoch(self) -> None:
        record = self._validate()
        for sink in self.sinks:
            sink.validation(record)

    def _validate(self) -> Record:
        """The epoch's train metrics so far and the val split's now; best.pt when it is the best
        yet; early stopping's verdict."""
        position = self.position
        record: Record = {"epoch": position.epoch, "step": position.step, **self.totals.compute("train")}
        self._ensure_finite(record["train/loss"])
        if "val" in self.data.splits:
            record.update(self.learner.evaluate(*self.data.splits["val"], "val"))
        record["lr"] = self.schedule.lr
        is_best = self.monitor.update(record, position.epoch, position.step)
        self.schedule.after_validation(record[self.monitor.metric])
        if is_best:
            self._write_checkpoint(record, "best.pt")
        position.stopped = self.monitor.stop_reason()
        self.last_validation = record
        return record

    def _end_epoch(self) -> None:
        """The epoch's record (its validation, unless one ran at this very step), last.pt, then the sinks."""
        position = self.position
        validated_now = self.last_validation.get("step") == position.step
        record = self.last_validation if validated_now else self._validate()
        samples = self.totals.samples()  # over every process: one all-reduce under DDP
        position.end_epoch(samples)
        self.final = record
        self._save_last()
        if not validated_now:
            for sink in self.sinks:
                sink.validation(record)
        timed = {**record, "samples_per_s": samples_per_s(samples, position.epoch_seconds),
                 "epoch_s": position.epoch_seconds}
        for sink in self.sinks:
            sink.epoch(timed)

    def _test(self) -> dict[str, Record]:
        """The test split, scored once at the end with best.pt's weights (by rank 0)."""
        if "test" not in self.data.splits or not self.job.is_main:
            return {}
        best, path = load_checkpoint(self.run_dir.checkpoints / "best.pt")
        load_eval_weights(self.learner, best, path)
        metrics = self.learner.evaluate(*self.data.splits["test"], "test")
        for sink in self.sinks:
            sink.test({"epoch": self.monitor.best_epoch, "step": self.monitor.best_step, **metrics})
        return {"test": metrics}

    def _ensure_finite(self, running_loss: float, grad_norm: float | None = None) -> None:
        """Called before anything is logged or saved: a bad step never reaches a checkpoint."""
        bad_step = self.learner.first_non_finite_step()
        if self.job.any(bad_step is not None or not math.isfinite(running_loss), self.device):
            raise TrainingFailed(_non_finite_message(bad_step or self.position.step, self.schedule.lr,
                                                     self.cfg.optimizer.lr, running_loss, grad_norm))

    def _checkpoint(self, record: Record) -> dict[str, Any]:
        position = self.position
        return {
            **self.learner.state_dict(), "scheduler": self.schedule.state_dict(),
            "monitor": self.monitor.state_dict(), "epoch_totals": self.totals.state_dict(),
            "position": position.state_dict(), "epoch": position.epoch, "step": position.step,
            "config": config_to_dict(self.cfg), "spec": spec_state(self.data.spec), "data_state": self.data.state,
            "metrics": record, "rng": capture_rng(), "per_process": self._per_process_state(),
            "world_size": self.job.world_size, "versions": versions(),
        }

    def _per_process_state(self) -> list[dict[str, Any]] | None:
        """What differs between processes, in rank order (on rank 0): the RNG states (augmentation's
        included) and the running sums of the epoch over each one's shard."""
        augment = self.data.augment
        return self.job.gather({"rng": capture_rng(), "augment": augment.state_dict() if augment else None,
                                "epoch_totals": self.totals.state_dict()})

    def _write_checkpoint(self, record: Record, name: str) -> None:
        payload = self._checkpoint(record)  # every process takes part: it gathers their RNG states
        if self.job.is_main:
            save_checkpoint(payload, self.run_dir.checkpoints / name)

    def _accumulator(self) -> Accumulator:
        return Accumulator(self.device, self.learner.criterion.classifies, self.job.sum, self.learner.predictions)

    def _save_last(self) -> None:
        """last.pt where the run stands (its metrics: those of the last completed epoch)."""
        self._ensure_finite(self.totals.compute("train")["train/loss"])
        self._write_checkpoint(self.final, "last.pt")

    def _stop_with_checkpoint(self, status: str, **extra: Any) -> None:
        """A stop on request: last.pt first (never of non-finite weights), then the summary."""
        try:
            self._save_last()
        except TrainingFailed as failure:
            self._finish("failed", error=str(failure))
            raise
        self._finish(status, **extra)

    def _finish(self, status: str, **extra: Any) -> dict[str, Any]:
        """The final summary, to every sink that started."""
        position = self.position
        summary = {
            "status": status, "started_at": position.started_at, "epochs_completed": position.epochs_completed,
            "steps": position.step, "best": self.monitor.best(), "final": self.final,
            "duration_s": round(position.elapsed, 3),
            "train_samples_per_s": round(samples_per_s(position.samples_seen, position.train_seconds), 1),
            "params": count_parameters(self.learner.model), "device": str(self.device), "threads": self.threads,
            "processes": self.job.world_size,
            "global_batch_size": self.cfg.data.batch_size * self.cfg.train.accumulate * self.job.world_size,
            "versions": versions(), **extra,
        }
        if status == "completed" and position.stopped:
            summary["stopped_early"] = position.stopped
        for sink in self.started:
            sink.finish(summary)
        return summary


def _every(interval: int | None, step: int) -> bool:
    return bool(interval) and step % interval == 0
