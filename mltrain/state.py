"""A run in progress, as one object: the learner, the lr schedule, the monitor, the position, the
epoch's running sums, the RNG states and where the data stream stands (and the NaN guard, which
no checkpoint needs: a checkpoint is only written of finite losses).

A checkpoint holds exactly this: `checkpoint()` builds it and `load_checkpoint()` reads it back,
each in one place. The run's one step counter is `position.step`; the schedule is replayed to it.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import torch

from .checkpoint import capture_rng, restore_rng, spec_state
from .config import Config, config_to_dict
from .data import DataSpec
from .data.augment import Augment
from .data.stream import TrainingStream
from .errors import UserError
from .learner import Learner
from .metrics import Accumulator, LossGuard
from .models import model_files
from .monitor import Monitor
from .optim import LRSchedule, run_length
from .position import Position, Renumbering
from .state_checks import DAMAGED, averaged_weights, check_numbers, check_optimizer_state, check_tensors, loading_state
from .strategy import SingleProcess


def versions() -> dict[str, str]:
    from . import __version__

    return {"mltrain": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


class TrainState:
    def __init__(self, cfg: Config, learner: Learner, stream: TrainingStream, strategy: SingleProcess,
                 spec: DataSpec, data_state: dict[str, Any], augment: Augment | None = None):
        """`spec` and `data_state`: what the model reads and the data's encoding, which every
        checkpoint stores beside the config. `augment`: the training batches' augmentation, whose
        generator is state."""
        self.cfg, self.learner, self.stream, self.strategy = cfg, learner, stream, strategy
        # What every checkpoint says of the run besides where it stands.
        self.description = {"config": config_to_dict(cfg), "spec": spec_state(spec), "data_state": data_state,
                            "model_files": model_files(learner.model)}
        self.augment = augment
        train = cfg.train
        steps_in_epoch, self.total_steps = run_length(stream.micro_batches_in_epoch(strategy.job.world_size),
                                                      train.accumulate, train.epochs, train.max_steps)
        self.position = Position(steps_in_epoch)
        stopping = train.early_stopping
        self.monitor = Monitor(train.monitor, train.monitor_mode, stopping.patience if stopping else None,
                               stopping.min_delta if stopping else 0.0)
        self.schedule = LRSchedule(cfg.scheduler, learner.optimizer, self.total_steps, self.monitor.mode)
        self.totals = self._fresh_totals()  # of the epoch in progress
        self.guard = LossGuard()
        self.final: dict[str, Any] = {}  # the record of the last completed epoch
        self.renumbering: Renumbering | None = None  # resumed with another number of processes
        self.stream_note: str | None = None  # resumed: how the data stream differs from an unstopped run's

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.position.steps_in_epoch)

    @property
    def samples_per_step(self) -> int:
        """Samples in one optimizer step, over every process."""
        return self.cfg.data.batch_size * self.cfg.train.accumulate * self.strategy.job.world_size

    def _fresh_totals(self) -> Accumulator:
        job = self.strategy.job
        return Accumulator(self.learner.device, self.learner.criterion.classifies, job.sum if job.enabled else None,
                           self.learner.predictions)

    def next_epoch(self) -> None:
        self.position.next_epoch()
        self.totals = self._fresh_totals()

    def stepped(self) -> None:
        """One optimizer step taken: the position advances and the schedule with it."""
        self.position.advance()
        self.schedule.after_step(self.position.step)

    def checkpoint(self, record: dict[str, Any], learner_state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The checkpoint of where the run stands, with `record` as its metrics and the strategy's
        `learner_state`, on rank 0 (None on the others). Every process takes part: each one's own
        state is gathered into it."""
        per_process = self.strategy.gather_per_process({
            "rng": capture_rng(), "augment": self.augment.state_dict() if self.augment else None,
            "epoch_totals": self.totals.state_dict(), "stream": self.stream.state_dict()})
        if not self.strategy.job.is_main:
            return None
        position = self.position
        return {
            **learner_state, "scheduler": self.schedule.state_dict(), "monitor": self.monitor.state_dict(),
            "epoch_totals": self.totals.state_dict(), "position": position.state_dict(), "epoch": position.epoch,
            "step": position.step, **self.description, "metrics": record, "rng": capture_rng(),
            "per_process": per_process, "world_size": self.strategy.job.world_size, "versions": versions(),
        }

    def load_checkpoint(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Continue where `checkpoint` stood. Each part is checked against what this config built
        before it is loaded: a damaged or edited file is a one-line UserError naming the part."""
        job = self.strategy.job
        saved_processes = checkpoint.get("world_size", 1)
        with loading_state(path, "the position in the run"):
            position = checkpoint["position"]
            if saved_processes != job.world_size:
                position = self._renumbered(position, saved_processes)
            self.position.load_state_dict(position)
        self._load_learner(checkpoint, path)
        check_numbers("the monitor state", self.monitor.state_dict(), checkpoint["monitor"], path)
        if not isinstance(checkpoint["scheduler"], dict) or not {"main", "warmup"} <= set(checkpoint["scheduler"]):
            raise UserError(f"{path}: the schedule state is not a mapping with main and warmup; {DAMAGED}")
        with loading_state(path, "the schedule, the running sums of the epoch, the data stream and the RNG states"):
            own = self._own_state(checkpoint.get("per_process"), saved_processes)
            self.schedule.load_state_dict(checkpoint["scheduler"], self.position.step)
            self.totals.load_state_dict((own or checkpoint)["epoch_totals"])
            restore_rng(checkpoint["rng"])
            if own is not None:
                restore_rng(own["rng"])
                if self.augment is not None and own["augment"] is not None:
                    self.augment.load_state_dict(own["augment"])
            stream_state = self._stream_state(own)
            if stream_state is not None:
                self.stream.load_state_dict(stream_state)
                self.stream_note = self.stream.resume_note
            else:
                self.stream_note = (f"resuming with {job.world_size} process(es) a run last trained with "
                                    f"{saved_processes}: the data stream starts its pass over")
        self.monitor.load_state_dict(checkpoint["monitor"])
        self.final = checkpoint["metrics"] if isinstance(checkpoint["metrics"], dict) else {}
        if self.renumbering is not None and job.is_main:
            print(f"resuming with {job.world_size} process(es) a run last trained with {saved_processes}: the "
                  f"global batch is now {self.samples_per_step} and the data order changes from step "
                  f"{self.position.step}")

    def _own_state(self, per_process: Any, saved_processes: int) -> dict[str, Any] | None:
        """This process's entry of the checkpoint's per-process states; None when the checkpoint
        was written by another number of processes (or kept none). ValueError when damaged."""
        if saved_processes != self.strategy.job.world_size or per_process is None:
            return None
        if not isinstance(per_process, list) or len(per_process) != saved_processes \
                or not all(isinstance(entry, dict) for entry in per_process):
            raise ValueError(f"per_process should hold one mapping for each of its {saved_processes} processes")
        return per_process[self.strategy.job.rank]

    def _stream_state(self, own: dict[str, Any] | None) -> dict[str, Any] | None:
        """Where the data stream continues: its saved state, which must agree with the position
        (ValueError when it does not), else where the position puts it (None: a library's stream
        that cannot say starts its pass over)."""
        position = self.position
        served = 0 if position.epoch_done else position.epoch_step * self.samples_per_step
        at_position = self.stream.state_at(position.epoch, served)
        if own is None or "stream" not in own:
            return at_position
        saved = own["stream"]
        if at_position is not None and not position.epoch_done and saved != at_position:
            raise ValueError(f"the data stream stood at {saved!r}, the position at {at_position!r}")
        return saved

    def _load_learner(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Weights, optimizer (as this config builds it), loss scaler and EMA, each checked first;
        from the shards beside the file when an fsdp run wrote it."""
        learner = self.learner
        if checkpoint.get("sharded"):
            from .sharding import load_sharded_learner

            load_sharded_learner(learner, checkpoint, path)
            return
        check_tensors("the model weights", learner.model.state_dict(), checkpoint["model"], path)
        check_optimizer_state(learner, checkpoint["optimizer"], path, self.cfg.optimizer)
        averaged = averaged_weights(checkpoint, path)
        if learner.ema is not None and averaged:
            check_tensors("the averaged (EMA) weights", learner.ema.module.state_dict(), averaged["weights"], path)
        if not isinstance(checkpoint["scaler"], dict):
            raise UserError(f"{path}: the loss-scaler state is not a mapping; {DAMAGED}")
        settings = [set(group) for group in learner.optimizer.param_groups]
        with loading_state(path, "the model, optimizer and loss-scaler state"):
            self.strategy.load_learner_state(learner, checkpoint)
        for built, group in zip(settings, learner.optimizer.param_groups):  # torch fills in settings it added since
            if built - set(group):
                raise UserError(f"{path}: the optimizer state has no setting {', '.join(sorted(built - set(group)))}; "
                                f"{DAMAGED}")

    def _renumbered(self, saved: dict[str, Any], saved_processes: Any) -> dict[str, Any]:
        """The saved position counted in this job's optimizer steps: a run resumed with another
        number of processes takes other global batches, so the data order changes from here (the
        samples the epoch had consumed are not shown again)."""
        if isinstance(saved_processes, bool) or not isinstance(saved_processes, int) or saved_processes < 1:
            raise ValueError(f"world_size {saved_processes!r}")
        accumulate = self.cfg.train.accumulate
        per_process_step = accumulate * self.cfg.data.batch_size
        saved_in_epoch, _ = run_length(self.stream.micro_batches_in_epoch(saved_processes), accumulate, 1,
                                       self.cfg.train.max_steps)
        self.renumbering = Renumbering(saved["step"], saved_in_epoch, self.position.steps_in_epoch,
                                       per_process_step * saved_processes, self.samples_per_step)
        state = dict(saved)
        state["epoch_step"] = self.renumbering.epoch_step(state["epoch_step"])
        state["step"] = self.renumbering.step(state["epoch"], state["step"])
        return state
