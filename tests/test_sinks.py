"""The loop's records go to sinks: the run files, the progress view, and any a caller adds."""

import csv
import json
import time
from datetime import datetime, timedelta

import pytest
import torch

import mltrain
from conftest import read_jsonl, write_config
from mltrain.errors import StopTraining
from mltrain.console import ProgressView
from mltrain.sinks import RunStart, Sink
from mltrain.sinks.progress import REFRESH_S, Progress


class Recorder(Sink):
    def __init__(self):
        self.events = []

    def start(self, run):
        self.events.append(("start", run))

    def step(self, record):
        self.events.append(("step", record))

    def validation(self, record):
        self.events.append(("validation", record))

    def epoch(self, record):
        self.events.append(("epoch", record))

    def test(self, metrics):
        self.events.append(("test", metrics))

    def finish(self, summary):
        self.events.append(("finish", summary))

    def of(self, kind):
        return [payload for event, payload in self.events if event == kind]


def test_a_callers_sink_gets_every_record_the_run_files_get(tmp_path):
    recorder = Recorder()
    config = write_config(tmp_path, train={"epochs": 2, "log_every_steps": 2, "val_every_steps": 3})
    result = mltrain.fit(config, sinks=[recorder])
    run = result.run_dir

    (start,) = recorder.of("start")
    assert isinstance(start, RunStart) and start.run_dir == run and start.resumed_step == 0
    assert start.epochs == 2 and start.total_steps == 2 * start.steps_in_epoch == result.summary["steps"]
    assert [event for event, _ in recorder.events][0] == "start" and recorder.events[-1][0] == "finish"

    steps = recorder.of("step")
    assert [r["step"] for r in steps] == list(range(2, result.summary["steps"] + 1, 2))
    assert all(set(r) == {"epoch", "step", "train/loss", "lr", "grad_norm", "samples_per_s"} for r in steps)
    assert all(r["samples_per_s"] > 0 for r in steps)
    # metrics.jsonl: the same records, without the machine's timings (a resumed run writes the same bytes)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("samples_per_s", "epoch_s")}  # noqa: E731
    validations = recorder.of("validation")
    written = read_jsonl(run / "metrics.jsonl")
    assert written == sorted(map(strip, steps + validations), key=lambda r: (r["step"], "grad_norm" not in r))
    assert not any("samples_per_s" in r for r in written)

    epochs = recorder.of("epoch")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(row["step"]) for row in rows] == [r["step"] for r in epochs] \
        == [start.steps_in_epoch, start.total_steps]
    assert all(r["samples_per_s"] > 0 and r["epoch_s"] > 0 for r in epochs)
    assert [strip(r) for r in epochs] == [v for v in validations if v["step"] in (r["step"] for r in epochs)]

    (test,) = recorder.of("test")
    summary = json.loads((run / "summary.json").read_text())
    assert test["epoch"] == summary["best"]["epoch"] and test["step"] == summary["best"]["step"]
    assert {k: v for k, v in test.items() if "/" in k} == summary["test"]
    (finished,) = recorder.of("finish")
    assert json.loads(json.dumps(finished)) == summary and summary["status"] == "completed"


def test_started_at_is_the_local_time_with_its_offset_and_survives_a_resume(tmp_path):
    before = datetime.now().astimezone()
    result = mltrain.fit(write_config(tmp_path, train={"epochs": 1}))
    started = datetime.fromisoformat(result.summary["started_at"])
    assert started.utcoffset() is not None
    assert before - timedelta(seconds=1) <= started <= datetime.now().astimezone()
    time.sleep(1.1)  # a resume later keeps the run's own start
    extended = mltrain.resume(result.run_dir, ["train.epochs=2"])
    assert extended.summary["started_at"] == result.summary["started_at"]
    assert json.loads((result.run_dir / "summary.json").read_text())["started_at"] == result.summary["started_at"]


class PruneOnSecondValidation(Sink):
    def __init__(self):
        self.validations, self.finished = [], []

    def validation(self, record):
        self.validations.append(record["step"])
        if len(self.validations) == 2:
            raise StopTraining("pruned", f"val/loss {record['val/loss']:.3f} is worse than the median trial")

    def finish(self, summary):
        self.finished.append(summary)


def test_a_sink_stops_the_run_on_purpose(tmp_path, cli):
    sink = PruneOnSecondValidation()
    config = write_config(tmp_path, train={"epochs": 5, "val_every_steps": 4})
    with pytest.raises(StopTraining, match="worse than the median trial"):
        mltrain.fit(config, run_dir=tmp_path / "run", sinks=[sink])
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "pruned" and "median trial" in summary["stopped"] and "error" not in summary
    stopped_at = sink.validations[-1]
    assert summary["steps"] == stopped_at and sink.validations == [4, stopped_at]
    assert sink.finished and sink.finished[0]["status"] == "pruned"
    last = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert last["step"] == stopped_at and last["position"]["stopped"].startswith("pruned: ")
    assert f"pruned at step {stopped_at}" in (run / "train.log").read_text()
    refused = cli("fit", "--resume", run)
    assert refused.exit_code == 2 and "nothing to resume" in refused.stderr and "pruned" in refused.stderr


def test_the_live_view_refreshes_on_time_and_metrics_keep_their_interval(tmp_path, monkeypatch):
    """Every refresh the view asks for gets a step record; metrics.jsonl stays at log_every_steps."""
    shown = []
    monkeypatch.setattr(Progress, "due", lambda self: True)  # as if every step came 0.5 s after the last
    original = Progress.step
    monkeypatch.setattr(Progress, "step", lambda self, record: (shown.append(record["step"]), original(self, record)))
    result = mltrain.fit(write_config(tmp_path, train={"epochs": 1, "log_every_steps": 5}))
    assert shown == list(range(1, result.summary["steps"] + 1))
    assert [r["step"] for r in read_jsonl(result.run_dir / "metrics.jsonl") if "grad_norm" in r] == \
        list(range(5, result.summary["steps"] + 1, 5))


def test_the_progress_sink_is_due_about_every_half_second():
    from io import StringIO

    from rich.console import Console

    from mltrain.monitor import Monitor

    progress = Progress(ProgressView(console=Console(file=StringIO(), force_terminal=True)), Monitor("val/loss"))
    progress.start(RunStart(None, None, 0, 20, 2, 10))
    assert progress.due()  # the first step of an epoch shows its bar
    progress.step({"epoch": 1, "step": 3, "train/loss": 0.5, "lr": 0.1, "samples_per_s": 100.0})
    assert not progress.due()
    time.sleep(REFRESH_S)
    assert progress.due()
    progress.finish({"status": "failed", "steps": 3})
    quiet = Progress(ProgressView(quiet=True), Monitor("val/loss"))
    assert not quiet.due()  # no bar, no refresh: no host sync


def test_fit_prints_epoch_lines_then_the_test_score_and_the_summary(cli, tmp_path):
    result = cli("fit", write_config(tmp_path, train={"epochs": 2}))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "samples/s" in lines[-3] and lines[-2].startswith("test (best.pt, epoch ")
    assert lines[-1].startswith("done in")
