"""The training loop, from a prepared (or restored) learner and data to a finished run directory."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .data.stream import drops_last
from .errors import RunComplete, StopTraining, TrainingFailed, UserError
from .freezing import Freezing
from .metrics import samples_per_s
from .models import count_parameters
from .signals import StopRequested, stop_on_signals
from .sinks import Record, RunStart, Sink
from .sinks.assemble import run_sinks
from .state import TrainState, versions
from .strategy import strategy_for

if TYPE_CHECKING:
    from .config import Config
    from .data import DataSplits
    from .data.stream import Batch
    from .distributed import Distributed
    from .learner import Learner
    from .restore import Restored
    from .run_dir import RunDir
    from .signals import _StopFlag


STOP_AGREED_EVERY = 8  # steps between the processes' agreement on a stop request (one all-reduce each)


@dataclass
class StepsDue:
    """The steps at which an epoch's loop ends, next logs, validates and checkpoints (inf: never)."""
    last: int
    log: float
    validation: float
    checkpoint: float


@dataclass
class FitResult:
    run_dir: Path
    summary: dict[str, Any]


def _non_finite_message(step: int, lr: float, peak_lr: float, loss: float, grad_norm: float | None) -> str:
    norm = f", last gradient norm {grad_norm:.4g}" if grad_norm is not None else ""
    return (f"training stopped: the loss became non-finite at step {step} (lr {lr:.3g}, recent loss {loss:.4g}"
            f"{norm}). A learning rate too high is the usual cause; try --set optimizer.lr={peak_lr / 10:.3g}. "
            f"No checkpoint was written from these weights.")


class Training:
    """One run of the loop, fresh or resumed from a checkpoint: `run()` reads top to bottom."""

    def __init__(self, cfg: Config, run: RunDir, data: DataSplits, learner: Learner, threads: int, job: Distributed,
                 quiet: bool = False, sinks: Sequence[Sink] = (), restored: Restored | None = None):
        """With `restored`, continues where its checkpoint stood. Writes nothing until `run()`,
        so a refused resume leaves the run directory as it was. With a `job` of several processes,
        each trains its shard of every global batch; rank 0 alone writes and prints."""
        self.cfg, self.run_dir, self.data, self.learner, self.threads = cfg, run, data, learner, threads
        self.job, self.device = job, learner.device
        self.strategy = strategy_for(job, cfg.train)
        self.strategy.prepare(learner, cfg.train.sync_batchnorm, cfg.seed)
        self.stream = data.training_stream(cfg.data.batch_size, cfg.seed,
                                           drops_last(cfg.data.drop_last, learner.compile_mode))
        self.state = TrainState(cfg, learner, self.stream, self.strategy, data.spec, data.state, data.augment)
        self.freezing = Freezing(learner, cfg.train.freeze, cfg.train.unfreeze_at_epoch)
        self.last_validation: Record = {}

        self.progress, self.sinks = run_sinks(cfg, run, self.state.monitor, quiet, job.is_main, sinks)
        self.started: list[Sink] = []  # the sinks whose start() ran: they are the ones to finish()
        if restored is not None:
            self.state.load_checkpoint(restored.checkpoint, restored.path)
            self._refuse_if_complete()

    def _refuse_if_complete(self) -> None:
        """A resumed run that has nothing left to train: RunComplete, unless it was stopped after
        its last checkpoint (then run() scores the test split and finishes it)."""
        state, position = self.state, self.state.position
        if not (position.stopped or position.step >= state.total_steps):
            return
        early = state.monitor.stop_reason() is not None
        if position.stopped and not early:  # a sink stopped it on purpose (a pruned trial)
            raise UserError(f"{self.run_dir.path}: nothing to resume: it was stopped ({position.stopped})")
        if self.run_dir.read_summary().get("status") != "completed":
            return
        why = position.stopped or f"it finished its {state.total_steps} steps"
        longer = f"train.max_steps={state.total_steps * 2}" if self.cfg.train.max_steps \
            else f"train.epochs={state.epochs + 10}"
        raise RunComplete(f"{self.run_dir.path} is already complete: {why}. To train longer, extend it, "
                          f"e.g. --set {longer}" + (" and a larger early_stopping.patience" if early else ""))

    def run(self) -> FitResult:
        state, job = self.state, self.job
        position = state.position
        one_batch_a_step = self.cfg.train.accumulate == 1 and not job.enabled
        train_epoch = self._train_epoch_a_batch_a_step if one_batch_a_step else self._train_epoch
        try:
            with stop_on_signals() as stop:
                self._start()
                while position.step < state.total_steps and not position.stopped:
                    if position.epoch_done:
                        state.next_epoch()
                    self._freeze_for(position.epoch)
                    position.start_clock()
                    micro_batches = self.stream.batches(position.epoch, job.rank, job.world_size)
                    train_epoch(micro_batches, stop)
                    self._end_epoch()
                test = self._test()
                stop.check()
        except TrainingFailed as failure:
            self._finish("failed", error=str(failure))
            raise
        except StopRequested:
            if position.step >= state.total_steps or position.stopped:  # stopped while scoring the test split:
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
            self.stream.close()
            self.data.close()
        with stop_on_signals() as stop:  # a stop waits for the plots, the loggers and the summary
            summary = self._finish("completed", **test)
        stop.check()  # then it is taken: the run is complete
        return FitResult(self.run_dir.path, summary)

    def _train_epoch(self, micro_batches: Iterator[Batch], stop: _StopFlag) -> None:
        """The epoch's remaining steps, each of train.accumulate micro-batches: this process's parts
        of the global batches."""
        cfg, learner, state, job, strategy = self.cfg, self.learner, self.state, self.job, self.strategy
        position, due = state.position, self._steps_due()
        while True:
            # A stop is taken before the next micro-batches are drawn: the stream's state in the
            # checkpoint is then exactly what training consumed.
            if not job.enabled:
                stop.check()
            elif position.step % STOP_AGREED_EVERY == 0 and job.any(stop.requested, self.device):
                raise StopRequested(stop.signal_name or "a stop on another process")
            group = list(itertools.islice(micro_batches, cfg.train.accumulate))
            if not group:
                raise self._data_ended()
            for index, (x, y, global_size) in enumerate(group):
                # This process's share of the global batch's mean loss, of the step's micro-batches.
                share = len(y) * job.world_size / global_size / len(group)
                with strategy.accumulating(last=index == len(group) - 1):
                    loss, logits = learner.forward_backward(x, y, scale=share)
                state.guard.add(position.step + 1, loss)
                state.totals.update(loss, logits, y)
            if self._after_step(due):
                return

    def _train_epoch_a_batch_a_step(self, batches: Iterator[Batch], stop: _StopFlag) -> None:
        """`_train_epoch` for one process whose every step is one batch, step for step the same
        without grouping micro-batches: the loop around a small model's step costs about as much
        as the step."""
        learner, state = self.learner, self.state
        guard, totals, position, due = state.guard, state.totals, state.position, self._steps_due()
        stop.check()  # as before every step: the stop is taken before the next batch is drawn
        for x, y, _ in batches:  # one process: each batch is the whole of its global batch
            loss, logits = learner.forward_backward(x, y)
            guard.add(position.step + 1, loss)
            totals.update(loss, logits, y)
            if self._after_step(due):
                return
            stop.check()
        raise self._data_ended()

    def _steps_due(self) -> StepsDue:
        """The steps of this epoch's remaining ones that end it, log, validate or checkpoint."""
        state, position, train = self.state, self.state.position, self.cfg.train
        return StepsDue(min(state.total_steps, position.step + position.steps_in_epoch - position.epoch_step),
                        _next_multiple(position.step, train.log_every_steps),
                        _next_multiple(position.step, train.val_every_steps),
                        _next_multiple(position.step, train.checkpoint_every_steps))

    def _after_step(self, due: StepsDue) -> bool:
        """The optimizer step after a step's micro-batches, then its log, validation and
        checkpoint as `due` says. True when the epoch's loop ends here."""
        position, train = self.state.position, self.cfg.train
        log_now = position.step + 1 == due.log
        grad_norm = self.learner.update(want_grad_norm=log_now)
        self.state.stepped()
        if log_now:
            due.log += train.log_every_steps
            self._log_step(float(grad_norm))
        elif self.job.is_main and self.progress.due():  # the live view only, about twice a second
            self.progress.step(self._step_record(this_process_only=True))
        if position.step == due.last:
            return True
        if position.step == due.validation:
            due.validation += train.val_every_steps
            self._validate_mid_epoch()
            if position.stopped:
                return True
        if position.step == due.checkpoint:
            due.checkpoint += train.checkpoint_every_steps
            self._save_last()
        return False

    def _data_ended(self) -> RuntimeError:
        position = self.state.position
        return RuntimeError(f"the training data ended at step {position.step}, before the "
                            f"{position.steps_in_epoch} steps of epoch {position.epoch}")

    def _start(self) -> None:
        state, position = self.state, self.state.position
        run = RunStart(self.cfg, self.run_dir.path, position.step, state.total_steps, state.epochs,
                       position.steps_in_epoch, state.renumbering)
        for sink in self.sinks:
            sink.start(run)
            self.started.append(sink)
        cfg, data, info = self.cfg, self.data, self.progress.info
        info(f"run {self.run_dir.path}" + (f" (resumed at step {position.step})" if position.step else ""))
        sizes = {name: data.size(name) for name in data.splits}
        info(f"data {cfg.data.dataset}: " + ", ".join(f"{name} {'a stream' if size is None else size}"
                                                     for name, size in sizes.items())
             + (" (streamed from disk)" if data.streamed else "") + f"; sample shape {tuple(data.spec.sample_shape)}"
             + (f"; {data.spec.num_classes} classes" if data.spec.num_classes else ""))
        info(data.describe())
        if state.stream_note:
            info(state.stream_note)
        if self.learner.started_from:
            info(self.learner.started_from)
        info(f"model {cfg.model.arch} ({count_parameters(self.learner.model):,} parameters), head {cfg.model.head}, "
             f"optimizer {cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {state.total_steps} steps, "
             f"device {self.device}, {self.threads} CPU thread{'s' if self.threads != 1 else ''}, "
             f"precision {cfg.train.precision}")
        if self.job.enabled:
            info(f"{self.job.world_size} processes: batch {cfg.data.batch_size} each, global batch "
                 f"{state.samples_per_step} per optimizer step")
        if cfg.train.preflight and position.step == 0 and (self.job.is_main or self.strategy.collective_forward):
            self._cheap_preflight()

    def _freeze_for(self, epoch: int) -> None:
        """Freeze or thaw as train.freeze says for this epoch; DDP is rebuilt for the new set."""
        if self.freezing.apply(epoch):
            self.strategy.trainable_changed(self.learner)
            self.progress.info(self.freezing.describe(epoch))

    def _cheap_preflight(self) -> None:
        """The pre-flight checks that cost nothing (data, loss at init, schedule): warnings only."""
        from .checks.preflight import run_cheap_checks

        for check in run_cheap_checks(self.cfg, self.data, self.learner):
            if check.status in ("warn", "fail"):
                self.progress.info(f"pre-flight {check.status.upper()}: {check.name}: {check.detail}"
                                   + (f"; {check.fix}" if check.fix else ""))

    def _lr(self) -> float:
        """The run's lr: the base parameter group's (see LRSchedule.named_lrs)."""
        return self.state.schedule.named_lrs()["lr"]

    def _step_record(self, grad_norm: float | None = None, this_process_only: bool = False) -> Record:
        """Where training stands: the running loss of the epoch (one host sync; over every process,
        unless `this_process_only` for the live view), lr, throughput."""
        state = self.state
        loss = state.totals.mean_loss(across_processes=not this_process_only)
        record: Record = {"epoch": state.position.epoch, "step": state.position.step, "train/loss": loss,
                          **state.schedule.named_lrs()}
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        record["samples_per_s"] = samples_per_s(state.totals.count * self.job.world_size,
                                                state.position.epoch_seconds)
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
        state, position = self.state, self.state.position
        record: Record = {"epoch": position.epoch, "step": position.step, **state.totals.compute("train")}
        self._ensure_finite(record["train/loss"])
        if "val" in self.data.splits:
            self.strategy.agree_on_buffers(self.learner)
            record.update(self.learner.evaluate(*self.data.splits["val"], "val"))
        record.update(state.schedule.named_lrs())
        is_best = state.monitor.update(record, position.epoch, position.step)
        state.schedule.after_validation(record[state.monitor.metric], position.step)
        if is_best:
            self.strategy.save(state, record, self.run_dir.checkpoints / "best.pt")
        position.stopped = state.monitor.stop_reason()
        self.last_validation = record
        return record

    def _end_epoch(self) -> None:
        """The epoch's record (its validation, unless one ran at this very step) to the sinks, then
        last.pt. In that order: a run killed between the two resumes from the checkpoint before,
        which drops the record and makes it again; the other way round, it would resume past an
        epoch whose record was never written."""
        state, position = self.state, self.state.position
        validated_now = self.last_validation.get("step") == position.step
        record = self.last_validation if validated_now else self._validate()
        samples = state.totals.samples()  # over every process: one all-reduce under DDP
        position.end_epoch(samples)
        state.final = record
        if not validated_now:
            for sink in self.sinks:
                sink.validation(record)
        timed = {**record, "samples_per_s": samples_per_s(samples, position.epoch_seconds),
                 "epoch_s": position.epoch_seconds}
        for sink in self.sinks:
            sink.epoch(timed)
        self._save_last()

    def _test(self) -> dict[str, Record]:
        """The test split, scored once at the end with best.pt's weights (by rank 0, or by every
        process of a sharded model)."""
        if "test" not in self.data.splits or not (self.job.is_main or self.strategy.collective_forward):
            return {}
        self.strategy.load_test_weights(self.learner, self.run_dir.checkpoints / "best.pt")
        metrics = self.learner.evaluate(*self.data.splits["test"], "test")
        monitor = self.state.monitor
        for sink in self.sinks:
            sink.test({"epoch": monitor.best_epoch, "step": monitor.best_step, **metrics})
        return {"test": metrics}

    def _ensure_finite(self, running_loss: float, grad_norm: float | None = None) -> None:
        """Called before anything is logged or saved: a bad step never reaches a checkpoint. The
        epoch's running loss sums every loss the guard holds (those since the last call), so a
        finite one proves them finite: the guard is read, to name the first bad step, only when
        it is not."""
        guard, finite = self.state.guard, math.isfinite(running_loss)
        bad_step = None if finite else guard.first_non_finite_step()
        if self.job.any(not finite, self.device):
            raise TrainingFailed(_non_finite_message(bad_step or self.state.position.step, self._lr(),
                                                     self.cfg.optimizer.lr, running_loss, grad_norm))
        guard.known_finite()

    def _save_last(self) -> None:
        """last.pt (or an fsdp run's checkpoints/last/) where the run stands (its metrics: those of
        the last completed epoch)."""
        self._ensure_finite(self.state.totals.compute("train")["train/loss"])
        self.strategy.save_training_state(self.state, self.state.final, self.run_dir.checkpoints)

    def _stop_with_checkpoint(self, status: str, **extra: Any) -> None:
        """A stop on request: last.pt first (never of non-finite weights), then the summary."""
        try:
            self._save_last()
        except TrainingFailed as failure:
            self._finish("failed", error=str(failure))
            raise
        self._finish(status, **extra)

    def _finish(self, status: str, **extra: Any) -> dict[str, Any]:
        """The final summary, to every sink that started, then into summary.json: a run killed
        before that last write is not `completed`, and a resume finishes it."""
        state, position = self.state, self.state.position
        summary = {
            "status": status, "started_at": position.started_at, "epochs_completed": position.epochs_completed,
            "steps": position.step, "best": state.monitor.best(), "final": state.final,
            "duration_s": round(position.elapsed, 3),
            "train_samples_per_s": round(samples_per_s(position.samples_seen, position.train_seconds), 1),
            "params": count_parameters(self.learner.model),
            "bytes_per_process": self.strategy.state_bytes(self.learner), "device": str(self.device), "threads": self.threads,
            "processes": self.job.world_size, "global_batch_size": state.samples_per_step,
            "versions": versions(), **extra,
        }
        if status == "completed" and position.stopped:
            summary["stopped_early"] = position.stopped
        try:
            for sink in self.started:
                sink.finish(summary)
        except BaseException:
            if self.started and status != "completed":  # the run's own end, whatever a logger's did
                self.run_dir.write_summary(summary)
            raise
        if self.started:  # rank 0, whose run files started
            self.run_dir.write_summary(summary)
        return summary


def _next_multiple(step: int, interval: int | None) -> float:
    """The first step after `step` that is a multiple of `interval`; never (inf) without one."""
    return (step // interval + 1) * interval if interval else math.inf
