"""The TensorBoard and MLflow sinks, driven with the records a run emits and read back with the
libraries' own readers."""

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import typer

from mltrain.cli.errors import exit_codes
from mltrain.config import config_from_dict, config_to_dict
from mltrain.hparams import as_text, flatten
from mltrain.plots import plot_run
from mltrain.run_dir import RunDir
from mltrain.sinks import RunStart, Sink
from mltrain.sinks.loggers import Background, logger_sinks
from mltrain.sinks.mlflow import MLflowSink

STEPS_IN_EPOCH, LOG_EVERY = 10, 5
TEST = {"test/loss": 0.25, "test/accuracy": 0.875}


def make_config(tmp_path, epochs=3, **output):
    output = {"loggers": ["tensorboard", "mlflow"], "mlflow_uri": f"sqlite:///{tmp_path}/mlflow.db", **output}
    return config_from_dict({"name": "tiny", "train": {"epochs": epochs}, "output": output}, source="test")


def records(first, last, attempt):
    """The events fit() emits for steps first..last: (event, record). Values depend on the attempt,
    so a test can tell which attempt a logged value came from."""
    for step in range(first, last + 1):
        epoch = (step - 1) // STEPS_IN_EPOCH + 1
        loss = attempt + 1.0 / step
        if step % LOG_EVERY == 0:
            yield "step", {"epoch": epoch, "step": step, "train/loss": loss, "lr": 0.01 / step,
                           "grad_norm": 0.5 + step, "samples_per_s": 1000.0 + step}
        if step % STEPS_IN_EPOCH == 0:
            record = {"epoch": epoch, "step": step, "train/loss": loss, "train/accuracy": 0.5,
                      "val/loss": loss + 0.1, "val/accuracy": 0.1 * epoch, "lr": 0.01 / step}
            yield "validation", record
            yield "epoch", record


def drive(sinks, run, cfg, last, resumed_step=0, attempt=0, status="completed"):
    """A run from resumed_step to `last` as the loop drives it; metrics.jsonl is written as the
    run-files sink writes it. Returns the final summary."""
    if resumed_step:
        run.cut_back(resumed_step)
    total = cfg.train.epochs * STEPS_IN_EPOCH
    for sink in sinks:
        sink.start(RunStart(cfg, run.path, resumed_step, total, cfg.train.epochs, STEPS_IN_EPOCH))
    final = {}
    for event, record in records(resumed_step + 1, last, attempt):
        if event == "epoch":
            run.append_record(record)
            run.add_epoch_row(record)
            final = record
        elif event == "step":
            run.append_record(record)
        for sink in sinks:
            getattr(sink, event)(record)
    summary = {"status": status, "final": final, "best": {"metric": "val/accuracy", "epoch": last // 10}}
    if status == "completed":
        for sink in sinks:
            sink.test(TEST)
        summary["test"] = TEST
        plot_run(run.path)
        torch.save({"model": {"w": torch.ones(2)}}, run.checkpoints / "best.pt")
    for sink in sinks:
        sink.finish(summary)
    return summary


def tensorboard_scalars(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_plugin(directory, plugin):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return events, events.PluginTagToContent(plugin)


def mlflow_run(run_dir):
    from mlflow import MlflowClient

    state = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    return client, client.get_run(state["run_id"])


def expected_steps(last):
    """Every metric key the loop emits, with the steps it is emitted at up to `last`."""
    steps: dict[str, set] = {}
    for _, record in records(1, last, 0):
        for key in record:
            if key not in ("epoch", "step"):
                steps.setdefault(key, set()).add(record["step"])
    return {key: sorted(found) for key, found in steps.items()}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts under the working directory
    return tmp_path


def test_both_loggers_record_every_metric_step_and_param(in_tmp):
    cfg = make_config(in_tmp, mlflow_log_model=True)
    run = RunDir.create(in_tmp / "runs", cfg.name)
    summary = drive(logger_sinks(cfg, run.path), run, cfg, last=30)

    scalars = tensorboard_scalars(run.path / "tensorboard")
    expected = {**expected_steps(30), **{key: [30] for key in TEST}}
    assert {tag: [step for step, _ in points] for tag, points in scalars.items()} == expected
    assert scalars["val/accuracy"] == [(10, pytest.approx(0.1)), (20, pytest.approx(0.2)), (30, pytest.approx(0.3))]
    events, hparams = tensorboard_plugin(run.path / "tensorboard", "hparams")
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"]).session_start_info
    flat = flatten(config_to_dict(cfg))
    assert set(start.hparams) == set(flat)
    assert start.hparams["optimizer.lr"].number_value == cfg.optimizer.lr
    assert start.hparams["model.hidden"].string_value == "[128]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} == {
        "train/loss", "train/accuracy", "val/loss", "val/accuracy", *TEST}
    text = events.PluginTagToContent("text")
    assert "config/text_summary" in text

    client, mlrun = mlflow_run(run.path)
    assert client.get_experiment(mlrun.info.experiment_id).name == "tiny"
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == run.path.name
    assert mlrun.data.params == {key: as_text(value) for key, value in flat.items()}
    for key, steps in expected.items():
        history = client.get_metric_history(mlrun.info.run_id, key)
        assert [metric.step for metric in history] == steps, key
    assert mlrun.data.metrics["test/accuracy"] == TEST["test/accuracy"]
    artifacts = {item.path for item in client.list_artifacts(mlrun.info.run_id)}
    assert artifacts == {"config.yaml", "summary.json", "plots", "checkpoints"}
    assert {item.path for item in client.list_artifacts(mlrun.info.run_id, "plots")} \
        == {f"plots/{path.name}" for path in (run.path / "plots").iterdir()}
    local = Path(client.download_artifacts(mlrun.info.run_id, "summary.json", str(in_tmp)))
    assert json.loads(local.read_text())["test"] == summary["test"]


def test_a_resumed_run_continues_the_same_runs_without_duplicates(in_tmp):
    """The first attempt fails at step 25, its last.pt at step 20; the resume extends it to 4 epochs."""
    cfg = make_config(in_tmp)
    run = RunDir.create(in_tmp / "runs", cfg.name)
    drive(logger_sinks(cfg, run.path), run, cfg, last=25, attempt=1, status="failed")
    _, first = mlflow_run(run.path)
    assert first.info.status == "FAILED"

    longer = make_config(in_tmp, epochs=4)
    drive(logger_sinks(longer, run.path), run, longer, last=40, resumed_step=20, attempt=2)

    expected = {**expected_steps(40), **{key: [40] for key in TEST}}
    scalars = tensorboard_scalars(run.path / "tensorboard")
    assert {tag: [step for step, _ in points] for tag, points in scalars.items()} == expected
    # The void steps 21-25 of the failed attempt are purged: step 25 shows the resumed value.
    assert dict(scalars["train/loss"])[20] == pytest.approx(1 + 1 / 20)
    assert dict(scalars["train/loss"])[25] == pytest.approx(2 + 1 / 25)

    client, mlrun = mlflow_run(run.path)
    assert mlrun.info.run_id == first.info.run_id and mlrun.info.status == "FINISHED"
    for key, steps in expected.items():
        assert [metric.step for metric in client.get_metric_history(mlrun.info.run_id, key)] == steps, key
    assert mlrun.data.params["train.epochs"] == "3" and mlrun.data.tags["resumed.train.epochs"] == "4"
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1


@pytest.mark.parametrize("send_every_s", [0.0, 3600.0])
def test_mlflow_after_a_kill_sends_each_step_once(in_tmp, monkeypatch, send_every_s):
    """Killed at step 25 (no finish): what was sent stays, what was held is lost; the resume from
    step 20 fills the gap from metrics.jsonl. With sends at every step, or none before the kill."""
    monkeypatch.setattr(MLflowSink, "send_every_s", send_every_s)
    cfg = make_config(in_tmp, loggers=["mlflow"])
    run = RunDir.create(in_tmp / "runs", cfg.name)
    killed = MLflowSink(run.path, cfg.output.mlflow_uri, log_model=False)
    killed.start(RunStart(cfg, run.path, 0, 30, 3, STEPS_IN_EPOCH))
    for event, record in records(1, 25, attempt=1):
        run.append_record(record)
        if event == "epoch":
            run.add_epoch_row(record)
        getattr(killed, event)(record)

    drive(logger_sinks(cfg, run.path), run, cfg, last=30, resumed_step=20, attempt=2)
    client, mlrun = mlflow_run(run.path)
    for key, steps in {**expected_steps(30), **{key: [30] for key in TEST}}.items():
        assert [metric.step for metric in client.get_metric_history(mlrun.info.run_id, key)] == steps, key


def test_a_logger_whose_server_is_down_warns_once_and_never_waits(in_tmp, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    cfg = make_config(in_tmp, loggers=["mlflow"], mlflow_uri="http://127.0.0.1:9")  # nothing listens there
    run = RunDir.create(in_tmp / "runs", cfg.name)
    started = time.perf_counter()
    drive(logger_sinks(cfg, run.path), run, cfg, last=30)
    assert time.perf_counter() - started < 30
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "the mlflow logger stopped" in warnings[0], warnings


def test_tensorboard_on_a_folder_it_cannot_write_warns_in_one_line(in_tmp, monkeypatch, capsys):
    import torch.utils.tensorboard

    def read_only(directory, **options):  # what the writer raises on a read-only file system
        raise OSError(30, "Read-only file system", directory)

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", read_only)
    cfg = make_config(in_tmp, loggers=["tensorboard"])
    run = RunDir.create(in_tmp / "runs", cfg.name)
    drive(logger_sinks(cfg, run.path), run, cfg, last=3)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"cannot write its events into {run.path / 'tensorboard'}: Read-only file " \
        "system" in warnings[0], warnings


def test_a_logger_that_fails_mid_run_warns_once(in_tmp, monkeypatch, capsys):
    monkeypatch.setattr(MLflowSink, "send_every_s", 0.0)
    cfg = make_config(in_tmp, loggers=["mlflow"])
    run = RunDir.create(in_tmp / "runs", cfg.name)
    (sink,) = logger_sinks(cfg, run.path)
    sink.start(RunStart(cfg, run.path, 0, 30, 3, STEPS_IN_EPOCH))
    events = list(records(1, 30, 0))
    for event, record in events[:6]:
        getattr(sink, event)(record)
    deadline = time.monotonic() + 30
    while not (run.path / "mlflow.json").exists() or json.loads((run.path / "mlflow.json").read_text())[
            "sent_step"] < 10:
        assert time.monotonic() < deadline, "no metrics reached MLflow"
        time.sleep(0.05)
    (in_tmp / "mlflow.db").write_bytes(b"not a database" * 100)  # the store breaks under the run
    for event, record in events[6:]:
        getattr(sink, event)(record)
    sink.finish({"status": "completed", "final": {}})
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "the mlflow logger stopped" in warnings[0], warnings


class Slow(Sink):
    def __init__(self):
        self.seen = []

    def step(self, record):
        time.sleep(0.05)
        self.seen.append(record["step"])


def test_a_slow_logger_does_not_slow_the_loop_and_still_gets_everything(tmp_path):
    cfg = make_config(tmp_path)
    slow = Slow()
    background = Background("slow", slow)
    background.start(RunStart(cfg, tmp_path, 0, 20, 1, 20))
    started = time.perf_counter()
    for step in range(1, 21):
        background.step({"epoch": 1, "step": step})
    assert time.perf_counter() - started < 0.05  # 20 steps of a 0.05 s logger: 1 s if it were waited for
    background.finish({"status": "completed"})
    assert slow.seen == list(range(1, 21))


class Hanging(Sink):
    def __init__(self):
        self.release = threading.Event()

    def step(self, record):
        self.release.wait(60)  # a request to a server that never answers


def test_a_logger_that_stops_answering_is_given_up(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Background, "stall_s", 0.5)
    warning = "warning: the hanging logger stopped (it has not answered for 0.5 s); training goes on without it"
    hanging = Hanging()
    background = Background("hanging", hanging)
    background.start(RunStart(make_config(tmp_path), tmp_path, 0, 20, 1, 20))
    background.step({"epoch": 1, "step": 1})
    time.sleep(0.7)
    background.step({"epoch": 1, "step": 2})  # the loop notices on its next record
    assert capsys.readouterr().err.strip() == warning
    started = time.perf_counter()
    background.finish({"status": "completed"})
    assert time.perf_counter() - started < 0.1 and capsys.readouterr().err == ""
    hanging.release.set()


def test_a_logger_that_hangs_at_the_end_is_not_waited_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Background, "stall_s", 0.5)
    hanging = Hanging()
    background = Background("hanging", hanging)
    background.start(RunStart(make_config(tmp_path), tmp_path, 0, 20, 1, 20))
    for step in range(1, 21):
        background.step({"epoch": 1, "step": step})
    started = time.perf_counter()
    background.finish({"status": "completed"})
    assert time.perf_counter() - started < 5
    hanging.release.set()
    assert "it has not answered for 0.5 s" in capsys.readouterr().err


@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_a_logger_that_is_not_installed_is_exit_2_with_the_pip_command(tmp_path, monkeypatch, capsys, logger):
    monkeypatch.setitem(sys.modules, logger, None)  # what an absent package looks like to import
    with pytest.raises(typer.Exit) as exit_info, exit_codes():
        logger_sinks(make_config(tmp_path, loggers=[logger]), tmp_path)
    assert exit_info.value.exit_code == 2
    assert capsys.readouterr().err.strip() == \
        f'error: output.loggers: {logger} is not installed; pip install "mltrain[{logger}]"'


def test_unknown_logger_names_are_refused_at_load(cli, tmp_path):
    from conftest import write_config

    result = cli("config", write_config(tmp_path, output={"loggers": ["tensorbord"]}))
    assert result.exit_code == 2
    assert "output.loggers" in result.stderr and "tensorboard, mlflow" in result.stderr


def test_fit_kill_and_resume_log_to_both_and_eval_adds_the_confusion_matrix(in_tmp, cli):
    """End to end through the command line: a run killed mid-way and resumed leaves TensorBoard
    and MLflow with each step once, as metrics.jsonl has them. The killed run is a process of its
    own; the resume and eval run the command line in this process."""
    import signal
    import subprocess

    import yaml

    from conftest import MLTRAIN
    from test_resume import wait_for_step

    config = in_tmp / "logged.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "spirals", "points": 200, "batch_size": 16},
        "model": {"arch": "mlp", "hidden": [16]}, "optimizer": {"name": "adam", "lr": 0.02},
        "train": {"epochs": 3, "log_every_steps": 5, "checkpoint_every_steps": 10},
        "output": {"dir": str(in_tmp / "runs"), "loggers": ["tensorboard", "mlflow"],
                   "mlflow_uri": f"sqlite:///{in_tmp / 'mlflow.db'}"},
    }))
    run = in_tmp / "run"
    first = subprocess.Popen([MLTRAIN, "fit", str(config), "--run-dir", str(run)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for_step(run, 45, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = cli("fit", "--resume", run)
    assert resumed.exit_code == 0, resumed.output

    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    want = sorted({record["step"] for record in logged if "train/loss" in record})
    scalars = tensorboard_scalars(run / "tensorboard")
    assert sorted(step for step, _ in scalars["train/loss"]) == want  # the killed tail purged, none doubled
    client, mlflow = mlflow_run(run)
    history = client.get_metric_history(mlflow.info.run_id, "train/loss")
    assert sorted(metric.step for metric in history) == want
    assert mlflow.data.params["optimizer.lr"] == "0.02" and "test/accuracy" in mlflow.data.metrics

    evaluated = cli("eval", run)
    assert evaluated.exit_code == 0, evaluated.output
    assert (run / "plots" / "confusion-test.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "confusion/test" in events.Tags()["images"]


def test_a_run_restarted_before_its_first_checkpoint_keeps_one_tensorboard_value_per_step(tmp_path):
    """An attempt killed before any checkpoint left events; the restart (resumed at step 0) hides
    them rather than adding a second value at each step."""
    from mltrain.config import config_from_dict
    from mltrain.sinks import RunStart
    from mltrain.sinks.tensorboard import TensorBoardSink

    run = RunStart(config_from_dict({}), tmp_path, resumed_step=0, total_steps=3, epochs=1, steps_in_epoch=3)
    for attempt, loss in enumerate((9.0, 1.0)):
        sink = TensorBoardSink(tmp_path / "tensorboard")
        sink.start(run)
        for step in (1, 2, 3)[: 2 if attempt == 0 else 3]:
            sink.step({"epoch": 1, "step": step, "train/loss": loss})
        sink.writer.close()
    assert tensorboard_scalars(tmp_path / "tensorboard")["train/loss"] == [(1, 1.0), (2, 1.0), (3, 1.0)]
