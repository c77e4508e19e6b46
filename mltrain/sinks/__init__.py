"""Where the training loop's records go: run-directory files, the progress view, loggers.

The loop calls every sink in order; a sink does nothing for the events it does not override."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import Config
    from ..position import Renumbering

Record = dict[str, Any]  # "epoch", "step" and metrics named "<split>/<metric>", "lr", ...


@dataclass(frozen=True)
class RunStart:
    cfg: Config
    run_dir: Path
    resumed_step: int  # 0 for a fresh run; records past this step from an earlier attempt are void
    total_steps: int
    epochs: int
    steps_in_epoch: int
    renumbering: Renumbering | None = None  # resumed with another number of processes: the earlier steps' units


class Sink:
    def start(self, run: RunStart) -> None:
        """Before the first step (of a fresh or resumed run)."""

    def step(self, record: Record) -> None:
        """A training-step record: epoch, step, train/loss, lr, grad_norm, samples_per_s."""

    def validation(self, record: Record) -> None:
        """After each validation (mid-epoch or at an epoch's end): epoch, step, train/*, val/*, lr."""

    def epoch(self, record: Record) -> None:
        """An epoch's final record (the one metrics.csv gets)."""

    def test(self, metrics: Record) -> None:
        """The test split scored with best.pt at the end."""

    def finish(self, summary: dict[str, Any]) -> None:
        """The final summary (status completed, failed, interrupted or a sink's StopTraining status)."""
