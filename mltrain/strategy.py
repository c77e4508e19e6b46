"""How the processes of a job share the training: one owner each for wrapping the model, holding
back gradient synchronisation between micro-batches, and gathering and saving the training state.

`SingleProcess` runs the model as it is. `DataParallel` trains a full copy per process through
DistributedDataParallel, which averages gradients in backward; rank 0 writes every checkpoint
with full tensors, with each process's own RNG and running sums gathered into it. The job's
collectives (sums, flags, gathers) are `Distributed`'s.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .checkpoint import save_checkpoint
from .distributed import Distributed
from .learner import NO_CONTEXT, Learner

PER_RANK_SEED = 1_000_003  # dropout draws differ per process: seed * PER_RANK_SEED + rank


class SingleProcess:
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

    def save(self, payload: dict | None, path) -> None:
        """Write a checkpoint `payload` built on rank 0 (None on the other ranks)."""
        if self.job.is_main:
            save_checkpoint(payload, path)


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


def strategy_for(job: Distributed) -> SingleProcess:
    return DataParallel(job) if job.enabled else SingleProcess(job)
