"""`fit` and `resume`: a run directory made or reopened, the data and learner prepared from the
config or restored from a checkpoint, inside the job's process group; then the loop
(`train.Training`) runs it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

from .checkpoint import training_state_file
from .config import Config, load_config
from .devices import pick_device
from .distributed import Distributed
from .errors import UserError
from .registry import from_stored
from .restore import restore
from .run_dir import RunDir
from .signals import stop_on_signals
from .sinks import Sink
from .startup import prepare
from .train import FitResult, Training


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
            training = Training(cfg, run, prepared.data, prepared.learner, prepared.threads, job, quiet, sinks)
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
        if target.is_dir() and (target / "config.yaml").is_file() \
                and training_state_file(target / "checkpoints") is None:
            with from_stored():  # a run directory may come from anyone
                cfg = load_config(target / "config.yaml", overrides)
            torch_device = job.device_for(pick_device(device or cfg.train.device))
            with job.joined(torch_device), _shared(job, lambda: RunDir.reopen(target)) as run:
                prepared = prepare(cfg, torch_device, job.local_world_size)
                training = Training(cfg, run, prepared.data, prepared.learner, prepared.threads, job, quiet, sinks)
                return training.run()
        restored = restore(target, prefer=("last.pt",), device=device, overrides=overrides, resume=True)
        if restored.run_dir is None:
            raise UserError(f"{restored.path}: --resume needs a checkpoint inside its run directory "
                            "(<run>/checkpoints/last.pt), where the run's metrics and log continue")
        with job.joined(restored.learner.device), _shared(job, lambda: RunDir.reopen(restored.run_dir)) as run:
            training = Training(restored.cfg, run, restored.data(), restored.learner, restored.threads, job, quiet,
                                sinks, restored)
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
