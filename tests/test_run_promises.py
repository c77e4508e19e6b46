"""What a user sees of a run: plain output against --quiet, threads in summary.json, a failure
mid-run, and the changes a resume refuses."""

import json
import os
import signal
import time

import pytest

import mltrain
from conftest import only_run, write_config
from mltrain.sinks import Sink


def test_plain_output_has_an_epoch_line_each_and_quiet_only_the_last_line(cli, tmp_path):
    config = write_config(tmp_path, train={"epochs": 2})
    plain = cli("fit", config)
    assert plain.exit_code == 0, plain.output
    lines = plain.output.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("epoch ")] == [["epoch", "1/2"], ["epoch", "2/2"]]
    assert any(line.startswith("model mlp") for line in lines) and lines[-1].startswith("done in ")

    quiet = cli("fit", config, "--quiet")
    assert quiet.exit_code == 0, quiet.output
    (line,) = quiet.output.splitlines()
    assert line.startswith("done in ") and "best val/loss" in line


def test_the_thread_count_is_in_the_summary(tmp_path):
    config = write_config(tmp_path, train={"epochs": 1, "threads": 1})
    result = mltrain.fit(config)
    assert result.summary["threads"] == 1
    assert json.loads((result.run_dir / "summary.json").read_text())["threads"] == 1


class FailsInEpoch2(Sink):
    def epoch(self, record):
        if record["epoch"] == 2:
            raise RuntimeError("the disk went away")


def test_an_error_mid_run_marks_the_run_failed_and_keeps_the_last_checkpoint(tmp_path):
    config = write_config(tmp_path, train={"epochs": 3})
    with pytest.raises(RuntimeError, match="the disk went away"):
        mltrain.fit(config, sinks=[FailsInEpoch2()])
    run = only_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "the disk went away" in summary["error"]
    assert (run / "checkpoints" / "last.pt").is_file()


class CtrlCTwice(Sink):
    """Ctrl-C twice while the epoch's record is handled: the second must not wait for the loop."""
    reached_after = after_first = False
    signalled_at = None

    def epoch(self, record):
        self.signalled_at = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a stop at the next step boundary
        self.after_first = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        self.reached_after = True


def test_a_second_ctrl_c_interrupts_at_once(tmp_path):
    config = write_config(tmp_path, train={"epochs": 3})
    handler, sink = signal.getsignal(signal.SIGINT), CtrlCTwice()
    with pytest.raises(KeyboardInterrupt):
        mltrain.fit(config, sinks=[sink])
    assert sink.after_first and time.monotonic() - sink.signalled_at < 5 and not sink.reached_after
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_completed"] == 1
    assert signal.getsignal(signal.SIGINT) is handler  # the command's handlers are put back


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("refusals")
    mltrain.fit(write_config(directory, train={"epochs": 1}))
    return only_run(directory)


@pytest.mark.parametrize("change, named", [
    ("optimizer.weight_decay=0.1", "resuming cannot change optimizer "),
    ("optimizer.lr=0.5", "resuming cannot change optimizer "),
    ("scheduler.name=step", "resuming cannot change scheduler.name (the checkpoint was trained with 'constant')"),
    ("train.accumulate=2", "resuming cannot change train.accumulate (the checkpoint was trained with 1)"),
])
def test_resume_refuses_changes_to_the_optimizer_schedule_and_accumulation(cli, one_epoch_run, change, named):
    before = {path.name: path.read_bytes() for path in one_epoch_run.iterdir() if path.is_file()}
    result = cli("fit", "--resume", one_epoch_run, "--set", change, "--set", "train.epochs=2")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert named in line and "start a new run with `mltrain fit`" in line
    assert {path.name: path.read_bytes() for path in one_epoch_run.iterdir() if path.is_file()} == before


def test_device_cpu_is_used_and_unusable_devices_are_refused(cli, tmp_path):
    config = write_config(tmp_path, train={"epochs": 1})
    result = cli("fit", config, "--device", "cpu", "--quiet")
    assert result.exit_code == 0 and json.loads((only_run(tmp_path) / "summary.json").read_text())["device"] == "cpu"
    refusals = [("tpu", "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps")]
    import torch

    if not torch.cuda.is_available():
        refusals.append(("cuda", "device 'cuda' asked for, but this machine has no CUDA GPU usable by torch"))
    for device, message in refusals:
        result = cli("fit", config, "--device", device)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and message in result.stderr, device
    assert len(list((tmp_path / "runs").iterdir())) == 1  # a refused device starts no run


def test_overfit_tiny_prints_its_checks_then_pass_or_fail(cli, tmp_path):
    config = write_config(tmp_path)
    passed = cli("overfit-tiny", config, "--samples", "8", "--steps", "60")
    assert passed.exit_code == 0, passed.output
    lines = passed.output.splitlines()
    assert lines[0] == "overfit-tiny: 8 samples, 60 steps, lr 0.01"
    assert lines[-1] == "PASS: the model can fit this data; go on to a full run"
    assert "100.0% of 8 samples" in passed.output and "FAIL" not in passed.output

    failed = cli("overfit-tiny", config, "--samples", "8", "--steps", "60", "--set", "optimizer.lr=1e-9")
    assert failed.exit_code == 1
    assert failed.output.splitlines()[-1].startswith("FAIL: the mlp could not memorise the subset: "
                                                     "try a larger optimizer.lr (now 1e-09)")


@pytest.mark.parametrize("classes, tables", [(50, True), (51, False)])
def test_eval_leaves_out_per_class_tables_above_50_classes(tmp_path, classes, tables):
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(2 * classes) % classes
    np.savez(tmp_path / "many.npz", x_train=rng.normal(size=(2 * classes, 4)).astype(np.float32), y_train=labels,
             x_test=rng.normal(size=(classes, 4)).astype(np.float32), y_test=np.arange(classes))
    config = {"data": {"dataset": "npz", "path": str(tmp_path / "many.npz"), "val_split": 0.0, "batch_size": 32},
              "model": {"arch": "mlp", "hidden": [8]}, "train": {"epochs": 1, "max_steps": 2, "monitor": "train/loss"},
              "output": {"dir": str(tmp_path / "runs")}}
    report = mltrain.evaluate(mltrain.fit(config).run_dir)
    assert "test/accuracy" in report["metrics"]
    for key in ("class_names", "per_class", "confusion_matrix"):
        assert (key in report) == tables, key
    if tables:
        assert len(report["confusion_matrix"]) == classes and len(report["per_class"]["f1"]) == classes
