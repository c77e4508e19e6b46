"""The run directory as a sink: config.yaml, metrics.jsonl, metrics.csv, summary.json (`running`; the
loop writes the final one), train.log, plots."""

from __future__ import annotations

import contextlib
from typing import Any

from ..config import dump_config
from ..errors import TrainingFailed
from ..run_dir import RunDir
from . import Record, RunStart, Sink

# Measurements of the machine, not of the run: left out of the metrics files, so that a run and
# its exact resume write the same bytes.
MACHINE_TIMINGS = ("samples_per_s", "epoch_s")


def _metrics_only(record: Record) -> Record:
    return {key: value for key, value in record.items() if key not in MACHINE_TIMINGS}


class RunFiles(Sink):
    def __init__(self, run: RunDir):
        self.run = run

    def log(self, line: str) -> None:
        """A line of train.log."""
        self.run.log(line)

    def start(self, run: RunStart) -> None:
        self.run.cut_back(run.resumed_step, run.renumbering)
        self.run.write_config(dump_config(run.cfg))
        self.run.write_json("summary.json", {**self.run.read_summary(), "status": "running"})

    def step(self, record: Record) -> None:
        self.run.append_record(_metrics_only(record))

    def validation(self, record: Record) -> None:
        self.run.append_record(_metrics_only(record))

    def epoch(self, record: Record) -> None:
        self.run.add_epoch_row(_metrics_only(record))

    def finish(self, summary: dict[str, Any]) -> None:
        """The plots of a completed run; a failed run's error in train.log (best effort: the disk may
        be full). summary.json is written after every sink finished (`Training._finish`)."""
        if summary["status"] == "failed":
            with contextlib.suppress(TrainingFailed):  # a write refused
                self.run.log(f"failed: {summary['error']}")  # train.log keeps what stderr showed
        elif summary["status"] == "completed":
            from ..plots import plot_run

            plot_run(self.run.path, best=summary["best"])
