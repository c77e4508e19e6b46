"""An MLflow run per run directory: experiment = the config's name, params = the flattened config,
every number of every record as a metric at its step, and at the end config.yaml, summary.json,
the plots (and best.pt with output.mlflow_log_model) as artifacts.

<run>/mlflow.json keeps the tracking URI, the MLflow run id and the last step sent, so a resume
continues the same MLflow run. MLflow cannot delete a metric, so a resumed run sends only steps
past those already there (an exact resume recomputes them identically) and first fills any gap up
to the checkpoint's step from metrics.jsonl: each step is in MLflow once."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from ..config import config_to_dict, dump_config
from ..hparams import as_text, flatten
from ..run_dir import json_safe, read_records, to_json, write_atomically
from . import Record, RunStart, Sink
from .tensorboard import scalars

_STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # any other (interrupted, pruned...): KILLED
_BATCH = 1000  # MLflow's most metrics per log_batch call
_PARAMS_BATCH = 100  # its most params per call
_PARAM_LENGTH = 6000  # its longest param value, in characters


def metric_name(key: str) -> str:
    """A record's key as MLflow accepts it (letters, digits, _ - . / and spaces): a group's
    `lr/*.bias` becomes `lr/_.bias`."""
    return re.sub(r"[^\w\-. /]", "_", key)


class MLflowSink(Sink):
    send_every_s = 5.0  # metrics are sent in batches at most this often (and at the end)

    def __init__(self, run_dir: Path, tracking_uri: str | None, log_model: bool):
        self.run_dir, self.tracking_uri, self.log_model = run_dir, tracking_uri, log_model
        self.state_path = run_dir / "mlflow.json"
        self._pending: list[Any] = []  # mlflow Metric objects not sent yet
        self._step = -1
        self._written: set[str] = set()  # keys already queued at self._step

    def start(self, run: RunStart) -> None:
        import mlflow
        from mlflow import MlflowClient

        state = self._read_state()
        uri = self.tracking_uri or state.get("tracking_uri") or mlflow.get_tracking_uri()
        self.client = MlflowClient(uri)
        run_id = state.get("run_id") if state.get("tracking_uri") == uri else None
        if run_id and self._exists(run_id):
            self.client.update_run(run_id, status="RUNNING")
            self.sent_step = state.get("sent_step", 0)
            if run.renumbering is not None:  # it counted in the earlier steps: from here on, the new ones
                self.sent_step = run.resumed_step
        else:
            experiment_id = self._experiment_id(run.cfg.name)
            run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                            tags={"mltrain.run_dir": str(self.run_dir.resolve())}).info.run_id
            self.sent_step = 0  # steps start at 1
        self.run_id, self.uri, self.cfg = run_id, uri, run.cfg
        self.sent_before = self.sent_step  # the steps an earlier attempt sent
        self._log_params()
        self._save_state()
        self._sent_at = time.monotonic()
        metrics = self.run_dir / "metrics.jsonl"
        if run.resumed_step > self.sent_step and metrics.is_file():  # records that never reached MLflow
            for record in read_records(metrics):
                if self.sent_step < record["step"] <= run.resumed_step:
                    self._queue(record)
            self._send()

    def step(self, record: Record) -> None:
        self._queue(record)

    def validation(self, record: Record) -> None:
        self._queue(record)

    def epoch(self, record: Record) -> None:
        self._queue(record)

    def test(self, metrics: Record) -> None:
        self._queue({"step": self._step, **metrics})

    def finish(self, summary: dict[str, Any]) -> None:
        self._send()
        self.client.log_text(self.run_id, dump_config(self.cfg), "config.yaml")
        self.client.log_dict(self.run_id, json_safe(summary), "summary.json")
        plots = self.run_dir / "plots"
        if plots.is_dir() and any(plots.iterdir()):
            self.client.log_artifacts(self.run_id, str(plots), "plots")
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.log_model and best.is_file():
            self.client.log_artifact(self.run_id, str(best), "checkpoints")
        self.client.set_terminated(self.run_id, _STATUS.get(summary.get("status", ""), "KILLED"))

    def _queue(self, record: Record) -> None:
        from mlflow.entities import Metric

        if record["step"] <= self.sent_before:
            return  # already in MLflow from an earlier attempt
        if record["step"] != self._step:
            if time.monotonic() - self._sent_at >= self.send_every_s:
                self._send()  # only whole steps are sent: mlflow.json's sent_step is complete
            self._step, self._written = record["step"], set()
        now_ms = int(time.time() * 1000)
        for key, value in scalars(record).items():
            if key not in self._written:  # the epoch's record repeats its last validation's numbers
                self._pending.append(Metric(metric_name(key), float(value), now_ms, self._step))
                self._written.add(key)

    def _send(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), _BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start:start + _BATCH])
        self._sent_at = time.monotonic()
        if pending:
            self.sent_step = max(self.sent_step, max(metric.step for metric in pending))
            self._save_state()

    def _log_params(self) -> None:
        """The flattened config as params. MLflow keeps a param's first value: a value changed on
        resume (train.epochs extended) is recorded as a `resumed.<key>` tag instead."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        params = {key: as_text(value)[:_PARAM_LENGTH] for key, value in flatten(config_to_dict(self.cfg)).items()}
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for start in range(0, len(new), _PARAMS_BATCH):
            self.client.log_batch(self.run_id, params=new[start:start + _PARAMS_BATCH])
        for key, value in params.items():
            if key in logged and logged[key] != value:
                self.client.set_tag(self.run_id, f"resumed.{key}", value)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created meanwhile by a run started beside this one
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self) -> None:
        write_atomically(self.state_path, to_json({"tracking_uri": self.uri, "run_id": self.run_id,
                                                   "sent_step": self.sent_step}, indent=2) + "\n")
