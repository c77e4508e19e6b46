"""TensorBoard event files in <run>/tensorboard/ (torch's SummaryWriter): every number of every
record at its step, the resolved config as text, and at the end the flattened config with the
final and test metrics for the HParams tab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import config_to_dict, dump_config
from ..errors import UserError
from ..hparams import as_text, flatten
from ..run_dir import read_records
from . import Record, RunStart, Sink


def scalars(record: Record) -> dict[str, float]:
    """The numbers of a record a logger plots against its step (not the step and epoch counters)."""
    return {key: value for key, value in record.items()
            if key not in ("epoch", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)}


class TensorBoardSink(Sink):
    def __init__(self, directory: Path):
        self.directory = directory
        self._step = 0
        self._written: set[str] = set()  # tags written at self._step: each is written once per step

    def start(self, run: RunStart) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # On resume, an earlier attempt's event files go and the run files' records up to the
        # checkpoint are written again: a process killed before its writer flushed would otherwise
        # leave a hole, or a doubled tail. (Purging them with purge_step fails when the new file's
        # name sorts first: the same second, a lower process id.) A run restarted before its first
        # checkpoint has earlier events too, and nothing to keep of them.
        try:
            for earlier in self.directory.glob("events.out.tfevents.*"):
                earlier.unlink()
            self.writer = SummaryWriter(str(self.directory))
        except OSError as error:
            raise UserError(f"output.loggers: tensorboard cannot write its events into {self.directory}: "
                            f"{error.strerror or error}; make the run directory writable") from None
        self.hparams = {key: value if isinstance(value, (int, float)) and not isinstance(value, bool)
                        else as_text(value) for key, value in flatten(config_to_dict(run.cfg)).items()}
        self._step = run.resumed_step
        config_text = "".join(f"    {line}\n" for line in dump_config(run.cfg).splitlines())  # markdown code
        self.writer.add_text("config", config_text, global_step=run.resumed_step)
        if run.resumed_step:
            for record in read_records(run.run_dir / "metrics.jsonl"):
                if 0 < record.get("step", 0) <= run.resumed_step:
                    self._write(record)

    def step(self, record: Record) -> None:
        self._write(record)

    def validation(self, record: Record) -> None:
        self._write(record)

    def epoch(self, record: Record) -> None:
        self._write(record)

    def test(self, metrics: Record) -> None:
        self._write({"step": self._step, **metrics})

    def finish(self, summary: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = {**summary.get("final", {}), **summary.get("test", {})}
        metrics = {key: value for key, value in scalars(final).items() if "/" in key}
        for event in hparams(self.hparams, metrics):
            self.writer.file_writer.add_summary(event, self._step)
        self.writer.close()

    def _write(self, record: Record) -> None:
        if record["step"] != self._step:
            self._step, self._written = record["step"], set()
        for key, value in scalars(record).items():
            if key not in self._written:  # the epoch's record repeats its last validation's numbers
                self.writer.add_scalar(key, value, self._step)
                self._written.add(key)
