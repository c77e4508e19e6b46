"""More than one process, through torch's own engine: torchrun's elastic launcher starts the
workers and sets their environment; DistributedDataParallel synchronises the gradients. This
module holds what mltrain adds around them: reading that environment, the one place metrics are
reduced across ranks, and launching `--nproc N` local workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch

from .errors import ExitCode, UserError

COLLECTIVE_TIMEOUT = timedelta(seconds=60)  # a rank that stops answering ends the job, not hangs it
LAUNCHER_PID = "MLTRAIN_LAUNCHER_PID"  # set by `launch_local` for its workers
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# How a worker runs mltrain: -P keeps the working directory off its import path (a yaml.py planted
# there would run in every worker), as it is for the `mltrain` console script.
WORKER_MODULE = ("-P", "-m", "mltrain")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes of the job on this machine

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes the run directory and checkpoints, and feeds the loggers."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """The job torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    def device_for(self, device: torch.device) -> torch.device:
        """One CUDA device per local rank; every rank shares the CPU. A local rank with no GPU of
        its own (torchrun started more processes than the machine has GPUs) is a UserError."""
        if self.enabled and device.type == "cuda":
            visible = torch.cuda.device_count()
            if self.local_rank >= visible:
                raise UserError(f"process {self.rank} (local rank {self.local_rank}) has no GPU: this machine has "
                                f"{visible} visible CUDA GPU(s) for {self.local_world_size} processes; start at most "
                                f"{visible} per machine (torchrun --nproc-per-node {visible})")
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group: gloo on the CPU, nccl on CUDA."""
        if not self.enabled or torch.distributed.is_initialized():
            return
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            torch.distributed.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise UserError(f"could not join the process group ({backend}): {str(error).splitlines()[0]}; "
                            "check --rdzv-endpoint (HOST:PORT reachable from every machine, port free) and "
                            "that every machine runs the same command") from None

    def stop(self, together: bool = True) -> None:
        """Leave the process group; `together`: after every process got here (the normal end), so
        none tears down its connections while another still finishes (test scoring on rank 0)."""
        if self.enabled and torch.distributed.is_initialized():
            if together:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    @contextlib.contextmanager
    def joined(self, device: torch.device) -> Iterator[None]:
        """In the process group for the duration (nothing for one process)."""
        self.start(device)
        try:
            yield
        except BaseException:
            self.stop(together=False)
            raise
        self.stop()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sums across ranks (a new tensor); the identity for one process. The only place metrics
        are reduced: running sums of loss, correct and count, and the NaN and stop flags."""
        if not self.enabled:
            return values
        values = values.clone()
        torch.distributed.all_reduce(values)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on any: the stop request, a failed step."""
        if not self.enabled:
            return flag
        return bool(self.sum(torch.tensor([int(flag)], device=device)).item())

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's value, on rank 0 (None elsewhere); [value] for one process."""
        if not self.enabled:
            return [value]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(value, gathered, dst=0)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def end_with_launcher() -> None:
    """Have Linux send this worker SIGTERM when its launcher dies (prctl's parent-death signal), as
    Ctrl-C to a live launcher does: rank 0 saves at the next step and the workers end, where they
    would otherwise train on with nobody waiting. Nothing on other systems."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.environ.get(LAUNCHER_PID, str(os.getppid())) != str(os.getppid()):
        signal.raise_signal(signal.SIGTERM)  # the launcher died before the signal was set


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `python -P -m mltrain <argv>` as `nproc` workers on this machine through torch's elastic
    launcher (what `torchrun --standalone --nproc-per-node N` does). Returns the exit code."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [name for name in logging.root.manager.loggerDict if name.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the workers say what matters
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each worker sets its own torch threads (train.threads)
    os.environ[LAUNCHER_PID] = str(os.getpid())  # the parent each worker checks for (end_with_launcher)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=f"mltrain-{os.getpid()}", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    try:
        elastic_launch(config, entrypoint=sys.executable)("-u", *WORKER_MODULE, *argv)
    except ChildFailedError as failure:
        # A worker killed or crashed is the cause (the others then fail on the lost connection);
        # otherwise the first to fail. Timestamps are whole seconds, so a tie is common.
        said_why = (ExitCode.FAILED, ExitCode.BAD_INPUT, ExitCode.INTERRUPTED)  # the worker said why on its stderr
        crashed = [item for item in failure.failures.items() if item[1].exitcode not in said_why]
        rank, reason = min(crashed or failure.failures.items(), key=lambda item: item[1].timestamp)
        if reason.exitcode in said_why:
            return reason.exitcode
        print(f"failed: worker rank {rank} ended with exit code {reason.exitcode} (killed or crashed); "
              "the other workers were stopped", file=sys.stderr)
        return ExitCode.FAILED
    except SignalException:  # Ctrl-C or SIGTERM to this launcher: rank 0 saved, said so, and stopped
        return ExitCode.INTERRUPTED
    return ExitCode.DONE
