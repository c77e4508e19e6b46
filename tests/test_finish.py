"""The end of a run: the plots and the loggers first, summary.json's `completed` last. A run stopped
or killed while it finishes is either complete with its plots or not `completed`, and then a
resume finishes it (the test score, plots, summary, loggers) without training again."""

import json
import os
import signal
import subprocess
import sys

import pytest

import mltrain
from conftest import only_run
from helpers import write_config
from mltrain import plots
from mltrain.errors import RunComplete
from mltrain.signals import StopRequested


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


def status(run):
    return json.loads((run / "summary.json").read_text())["status"]


def test_a_run_killed_while_it_draws_its_plots_is_not_completed_and_resume_finishes_it(tmp_path, monkeypatch):
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(plots, "plot_run", killed)
    with pytest.raises(Killed):
        mltrain.fit(write_config(tmp_path))
    run = only_run(tmp_path)
    assert status(run) == "running" and not any((run / "plots").iterdir())
    metrics = (run / "metrics.csv").read_bytes()

    monkeypatch.undo()
    summary = mltrain.resume(run).summary
    assert status(run) == "completed" and "test" in summary and list((run / "plots").glob("*.png"))
    assert (run / "metrics.csv").read_bytes() == metrics  # finished, not trained again
    with pytest.raises(RunComplete):
        mltrain.resume(run)


def test_a_stop_while_the_run_finishes_waits_for_its_plots_and_summary(tmp_path, monkeypatch):
    draw = plots.plot_run

    def stopped_while_drawing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return draw(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_run", stopped_while_drawing)
    with pytest.raises(StopRequested):  # exit 130, once the run is complete
        mltrain.fit(write_config(tmp_path))
    run = only_run(tmp_path)
    assert status(run) == "completed" and list((run / "plots").glob("*.png"))


# kill -9 while the plots are drawn, once MLflow has its run (mlflow.json): after the test score.
KILLED_WHILE_FINISHING = """
import os, signal, sys, time
import mltrain, mltrain.plots

def killed(run, **kwargs):
    while not (run / "mlflow.json").exists():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)

mltrain.plots.plot_run = killed
mltrain.fit(sys.argv[1])
"""


def test_fit_resume_finishes_a_run_killed_while_finishing_and_its_mlflow_run(tmp_path, monkeypatch, cli):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts under the working directory
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = write_config(tmp_path, output={"dir": str(tmp_path / "runs"), "loggers": ["mlflow"], "mlflow_uri": uri})
    crashed = subprocess.run([sys.executable, "-c", KILLED_WHILE_FINISHING, str(config)], capture_output=True,
                             text=True, timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    run = only_run(tmp_path)
    client, run_id = MlflowClient(uri), json.loads((run / "mlflow.json").read_text())["run_id"]
    assert status(run) == "running" and client.get_run(run_id).info.status == "RUNNING"

    resumed = cli("fit", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    assert status(run) == "completed" and list((run / "plots").glob("*.png"))
    finished = client.get_run(run_id)
    assert finished.info.status == "FINISHED" and {"test/loss", "test/accuracy"} <= set(finished.data.metrics)
    epochs = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "val/loss" in line]
    assert [metric.step for metric in client.get_metric_history(run_id, "val/loss")] == epochs  # each step once
    assert [artifact.path for artifact in client.list_artifacts(run_id, "plots")]
