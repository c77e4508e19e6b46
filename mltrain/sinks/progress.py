"""The progress view as a sink: on a terminal a bar per epoch, refreshed about every REFRESH_S
seconds; one line per epoch, per mid-epoch validation and for the test score (the plain lines
alone when not a terminal)."""

from __future__ import annotations

import time
from typing import Any

from ..monitor import Monitor
from ..console import ProgressView, format_metrics
from . import Record, RunStart, Sink

REFRESH_S = 0.5  # seconds between bar refreshes; each costs the loop one host sync


def _metrics(record: Record) -> Record:
    return {key: value for key, value in record.items() if "/" in key}


class Progress(Sink):
    def __init__(self, view: ProgressView, monitor: Monitor):
        """`monitor` is the run's own: it tells which validation was the best so far."""
        self.view, self.monitor = view, monitor
        self.run: RunStart | None = None
        self._bar: tuple[int, int] | None = None  # (epoch, steps done) the bar on screen shows
        self._next_refresh = 0.0  # time.perf_counter() value

    def info(self, text: str, always: bool = False) -> None:
        """A line above the bar (and in train.log)."""
        self.view.info(text, always)

    def due(self) -> bool:
        """Whether the bar wants a step record now: a clock reading, no host sync."""
        return self.view.live and time.perf_counter() >= self._next_refresh

    def start(self, run: RunStart) -> None:
        self.run = run

    def step(self, record: Record) -> None:
        steps = self.run.steps_in_epoch
        epoch = record["epoch"]
        done = min(max(record["step"] - (epoch - 1) * steps, 0), steps)
        if self._bar is None or self._bar[0] != epoch:
            self._end_bar()
            self.view.start_epoch(epoch, self.run.epochs, steps, done=done)
        else:
            for _ in range(done - self._bar[1]):
                self.view.advance()
        self._bar = (epoch, done)
        self.view.show(record["train/loss"], record["lr"], record["samples_per_s"])
        self._next_refresh = time.perf_counter() + REFRESH_S

    def validation(self, record: Record) -> None:
        ends_epoch = record["step"] % self.run.steps_in_epoch == 0 or record["step"] >= self.run.total_steps
        if not ends_epoch:  # an epoch's last validation is shown in its epoch line
            self.view.info(f"step {record['step']}  {format_metrics(_metrics(record))}  lr {record['lr']:.3g}"
                           + self._best(record))

    def epoch(self, record: Record) -> None:
        self._end_bar()
        self.view.info(f"epoch {record['epoch']}/{self.run.epochs}  {format_metrics(_metrics(record))}  "
                       f"lr {record['lr']:.3g}  {record['samples_per_s']:,.0f} samples/s  {record['epoch_s']:.2f}s"
                       + self._best(record))
        reason = self.monitor.stop_reason()
        if reason:
            self.view.info(reason)

    def test(self, metrics: Record) -> None:
        self.view.info(f"test (best.pt, epoch {metrics['epoch']})  {format_metrics(_metrics(metrics))}")

    def finish(self, summary: dict[str, Any]) -> None:
        self._end_bar()
        status, steps = summary["status"], summary["steps"]
        if status == "completed":
            best = summary["best"]
            self.view.info(f"done in {summary['duration_s']:.1f}s; best {best['metric']} {best['value']:.4g} at "
                           f"epoch {best['epoch']}; run directory {self.run.run_dir}", always=True)
        elif status == "interrupted":
            self.view.info(f"interrupted at step {steps}; to continue from its last checkpoint: "
                           f"mltrain fit --resume {self.run.run_dir}", always=True)
        elif status != "failed":  # a sink's StopTraining (a pruned trial)
            self.view.info(f"{status} at step {steps}: {summary['stopped']}", always=True)

    def _best(self, record: Record) -> str:
        return "  * best" if self.monitor.best_step == record["step"] else ""

    def _end_bar(self) -> None:
        self.view.end_epoch()
        self._bar = None
        self._next_refresh = 0.0  # the next epoch's bar appears at its first step
