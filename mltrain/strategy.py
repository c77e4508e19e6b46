"""How the processes of a job share the training: one owner each for wrapping the model, holding
back gradient synchronisation between micro-batches, and gathering and saving the training state.

`SingleProcess` runs the model as it is. `DataParallel` trains a full copy per process through
DistributedDataParallel, which averages gradients in backward; rank 0 writes every checkpoint
with full tensors, with each process's own RNG and running sums gathered into it. `sharding.
FullySharded` (train.strategy fsdp) shards the model instead. The job's collectives (sums,
flags, gathers) are `Distributed`'s.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoint import remove_sharded_training_state, save_checkpoint
from .distributed import Distributed
from .learner import NO_CONTEXT, Learner

if TYPE_CHECKING:
    from .config import TrainConfig
    from .sinks import Record
    from .state import TrainState

PER_RANK_SEED = 1_000_003  # dropout draws differ per process: seed * PER_RANK_SEED + rank


class SingleProcess:
    collective_forward = False  # True: every process must run each forward together (a sharded model)

    def __init__(self, job: Distributed = Distributed()):
        self.job = job

    def prepare(self, learner: Learner, sync_batchnorm: bool, seed: int) -> None:
        """Ready the learner to train in this job (nothing to do for one process)."""

    def trainable_changed(self, learner: Learner) -> None:
        """The set of parameters that train changed (a part froze or thawed)."""

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Around a micro-batch's backward; `last`: the optimizer step's last micro-batch."""
        return NO_CONTEXT

    def gather_per_process(self, value: Any) -> list[Any] | None:
        """Each process's `value` (what differs between them), in rank order on rank 0."""
        return self.job.gather(value)

    def agree_on_buffers(self, learner: Learner) -> None:
        """Rank 0's buffers (batch-norm statistics) on every process, before they are scored or
        saved: each process's drift apart in training, and every process must score alike (best.pt
        and early stopping are decided by each, together)."""
        if not self.job.enabled:
            return
        for model in {id(learner.model): learner.model, id(learner.eval_model): learner.eval_model}.values():
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def load_learner_state(self, learner: Learner, checkpoint: dict[str, Any]) -> None:
        """A checkpoint's whole weights, optimizer, loss-scaler and EMA state (checked) into the learner."""
        learner.load_state_dict(checkpoint)

    def learner_state(self, learner: Learner) -> dict[str, Any] | None:
        """The learner's whole state (weights, optimizer, loss scaler, EMA) on rank 0, None elsewhere."""
        return learner.state_dict() if self.job.is_main else None

    def save(self, state: TrainState, record: Record, path: Path) -> None:
        """One checkpoint file of where the run stands, with `record` as its metrics, written by rank 0."""
        payload = state.checkpoint(record, self.learner_state(state.learner))
        if self.job.is_main:
            save_checkpoint(payload, path)

    def save_training_state(self, state: TrainState, record: Record, checkpoints: Path) -> None:
        """The checkpoint a resume continues from: checkpoints/last.pt (an fsdp run's sharded one,
        from before a resume with one process or under ddp, goes)."""
        self.save(state, record, checkpoints / "last.pt")
        if self.job.is_main:
            remove_sharded_training_state(checkpoints)

    def load_test_weights(self, learner: Learner, best: Path) -> None:
        """best.pt's eval weights into the learner, to score the test split."""
        from .restore import load_eval_weights_from

        load_eval_weights_from(learner, best)

    def state_bytes(self, learner: Learner) -> dict[str, int]:
        """What this process holds of the weights, their gradients and the optimizer state, in bytes."""
        trainable = [p for p in learner.model.parameters() if p.requires_grad]
        state = [value for per_parameter in learner.optimizer.state.values() for value in per_parameter.values()
                 if isinstance(value, torch.Tensor)]
        return {"parameters": _local_bytes(learner.model.parameters()), "gradients": _local_bytes(trainable),
                "optimizer": _local_bytes(state)}


class DataParallel(SingleProcess):
    def __init__(self, job: Distributed):
        super().__init__(job)
        self.wrapped: nn.parallel.DistributedDataParallel | None = None

    def prepare(self, learner: Learner, sync_batchnorm: bool, seed: int) -> None:
        """Wrap the model in DDP (the process group must be up); checkpoints keep `learner.model`'s
        plain weight names."""
        if sync_batchnorm:
            # The converted layers keep the same Parameter objects, so the optimizer still holds them.
            learner.model = nn.SyncBatchNorm.convert_sync_batchnorm(learner.model)
        self._wrap(learner)
        torch.manual_seed(seed * PER_RANK_SEED + self.job.rank)  # the weights were drawn alike; dropout is not

    def trainable_changed(self, learner: Learner) -> None:
        """DDP reduces the gradients of the parameters that trained when it was built: rebuild it."""
        self._wrap(learner)

    def _wrap(self, learner: Learner) -> None:
        device = learner.device
        self.wrapped = nn.parallel.DistributedDataParallel(
            learner.model, device_ids=[device.index] if device.type == "cuda" else None)
        learner.run_through(self.wrapped)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """DDP averages gradients only on a step's last micro-batch."""
        return NO_CONTEXT if last else self.wrapped.no_sync()


def strategy_for(job: Distributed, train: TrainConfig) -> SingleProcess:
    """One process trains as it is; several as train.strategy says (auto: ddp)."""
    if not job.enabled:
        return SingleProcess(job)
    if train.strategy == "fsdp":
        from .sharding import FullySharded

        return FullySharded(job, train.fsdp, train.precision)
    return DataParallel(job)


def _local_bytes(tensors) -> int:
    """Bytes of this process's part of each tensor (a DTensor's local shard)."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).nbytes for t in tensors)
