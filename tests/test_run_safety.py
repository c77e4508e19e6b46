"""A run directory is written by one mltrain process at a time and only inside itself, and faults
outside the loop (a stop at start-up or at the very end, a full disk, odd files) lose nothing:
exit 2 with one line for bad input, exit 130 for a stop, exit 1 for a disk that refuses."""

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import mltrain
from conftest import MLTRAIN, only_run, write_config
from mltrain.errors import TrainingFailed
from mltrain.run_dir import RunDir, temporary_file
from mltrain.sinks import Sink

# A dataset and a model that pause where a test wants to send a signal: at start-up (loading the
# data) and while the test split is scored (the only eval-mode forward pass in these runs).
SLOW = '''
import os
import time
from pathlib import Path

import numpy as np
from torch import nn


def pause(where):
    """Once per SLOW_DIR: marks that `where` began, then waits until the test releases it (the file
    release-<where>), SLOW_<WHERE> seconds at most."""
    seconds = float(os.environ.get(f"SLOW_{where.upper()}", 0))
    folder = Path(os.environ["SLOW_DIR"])
    if seconds and not (folder / where).exists():
        (folder / where).touch()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (folder / f"release-{where}").exists():
            time.sleep(0.05)


def blobs(points: int = 90):
    pause("start")
    rng = np.random.default_rng(0)
    y = np.arange(points) % 3
    x = (rng.normal(size=(points, 2)) + 2 * y[:, None]).astype("float32")
    return {"train": (x, y), "test": (x[:30], y[:30]), "classes": ["a", "b", "c"]}


class Net(nn.Sequential):
    def __init__(self, input_shape, num_outputs):
        super().__init__(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, num_outputs))

    def forward(self, x):
        if not self.training:
            pause("test")
        return super().forward(x)
'''


@pytest.fixture
def slow(tmp_path, monkeypatch):
    """A config of the pausing dataset and model (importable here and in subprocesses), and the
    environment that makes them pause."""
    (tmp_path / "slowpkg.py").write_text(SLOW)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SLOW_DIR", str(tmp_path))
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "slowpkg:blobs", "val_split": 0.0, "batch_size": 16},
        "model": {"arch": "slowpkg:Net"}, "optimizer": {"name": "adam", "lr": 0.05},
        "train": {"epochs": 2, "monitor": "train/loss", "preflight": False}, "output": {"dir": str(tmp_path / "runs")},
    }))
    return config


@pytest.fixture
def start():
    """Starts `mltrain ARGS` with the given pauses (seconds at most); kills what still runs at the end."""
    processes = []

    def launch(*args, **pauses):
        env = {**os.environ, **{f"SLOW_{where.upper()}": str(seconds) for where, seconds in pauses.items()}}
        processes.append(subprocess.Popen([MLTRAIN, *map(str, args)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True, env=env))
        return processes[-1]

    yield launch
    for process in processes:
        process.kill()
        process.communicate()


def wait_for(path, process, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, f"{path.name} never began"
        time.sleep(0.02)


def one_line(result, needle):
    stderr = result.stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert needle in stderr, stderr


def files_of(run):
    """Every file of a run by relative path, with its bytes (the marker holds the last writer's pid)."""
    return {str(path.relative_to(run)): path.read_bytes() for path in sorted(run.rglob("*"))
            if path.is_file() and path.name != ".mltrain-run"}


def test_resume_only_continues_a_directory_mltrain_made(cli, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    handwritten = "# my settings, with comments\nseed: 0\ndata: {dataset: spirals}\n"
    (folder / "config.yaml").write_text(handwritten)
    result = cli("fit", "--resume", folder)
    assert result.exit_code == 2
    one_line(result, "not a run directory made by `mltrain fit`")
    assert f"mltrain fit {folder / 'config.yaml'}" in result.stderr
    assert [path.name for path in folder.iterdir()] == ["config.yaml"]
    assert (folder / "config.yaml").read_text() == handwritten

    # A run killed before its first checkpoint (and its first summary) has the marker: it resumes.
    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1})).run_dir
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "summary.json", "metrics.jsonl", "metrics.csv"):
        (run / name).unlink()
    result = cli("fit", "--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("link", ["checkpoints/last.pt", "checkpoints"])
def test_a_link_into_another_run_is_never_written_through(cli, tmp_path, link):
    runs = [mltrain.fit(write_config(tmp_path, train={"epochs": 1}), run_dir=tmp_path / name).run_dir
            for name in ("mine", "other")]
    mine, other = runs
    target = other / link
    if (mine / link).is_dir():
        shutil.rmtree(mine / link)
    else:
        (mine / link).unlink()
    (mine / link).symlink_to(target)
    before = [files_of(run) for run in runs]

    result = cli("fit", "--resume", mine, "--set", "train.epochs=2")
    assert result.exit_code == 2
    one_line(result, f"{mine / link} is a link to {target}, outside the run directory")
    assert cli("eval", mine).exit_code == 2  # eval writes its report into the run too
    assert [files_of(run) for run in runs] == before


def test_one_writer_at_a_time_and_a_killed_writer_leaves_nothing_behind(cli, tmp_path):
    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1})).run_dir
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from mltrain.run_dir import RunDir; "
         "RunDir.reopen(Path(sys.argv[1])); print('writing', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "writing\n"
        for command in (("fit", "--resume", run, "--set", "train.epochs=2"), ("eval", run)):
            refused = cli(*command)
            assert refused.exit_code == 2
            one_line(refused, f"another mltrain process (pid {holder.pid}) is writing this run")
    finally:
        holder.kill()  # kill -9: the kernel drops its lock
        holder.wait()
    # What a kill -9 in the middle of atomic writes leaves: hidden temporary files.
    leftovers = []
    for path in (run / "checkpoints/last.pt", run / "metrics.csv"):
        fd, name = temporary_file(path)
        os.close(fd)
        leftovers.append(Path(name))

    resumed = cli("fit", "--resume", run, "--set", "train.epochs=2")
    assert resumed.exit_code == 0, resumed.output
    assert not any(path.exists() for path in leftovers)
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 2


@pytest.mark.parametrize("resuming", [False, True], ids=["fit", "resume"])
def test_a_stop_during_start_up_exits_130_and_leaves_the_run_as_it_was(slow, cli, tmp_path, start, resuming):
    if resuming:
        run = mltrain.fit(slow, run_dir=tmp_path / "run").run_dir
        before = files_of(run)
        process = start("fit", "--resume", run, "--set", "train.epochs=3", "--trust-code", start=60)
    else:
        process = start("fit", slow, "--run-dir", tmp_path / "run", start=60)
    wait_for(tmp_path / "start", process)  # loading the data
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr
    if resuming:
        assert files_of(run) == before
        assert cli("fit", "--resume", run, "--set", "train.epochs=3").exit_code == 0
    else:
        assert not (tmp_path / "run").exists()  # nothing left behind that --run-dir would refuse


def test_a_stop_while_scoring_the_test_split_is_finished_by_resume(slow, cli, tmp_path, start):
    run = tmp_path / "run"
    process = start("fit", slow, "--run-dir", run, test=60)
    wait_for(tmp_path / "test", process)  # every step and its checkpoint done; the test split is scored
    refused = cli("fit", "--resume", run)  # the running fit holds the run
    assert refused.exit_code == 2 and f"(pid {process.pid})" in refused.stderr
    process.send_signal(signal.SIGTERM)
    (tmp_path / "release-test").touch()  # after the signal: scoring ends, and the stop is taken
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "test" not in summary

    resumed = cli("fit", "--resume", run)  # scores the test split and completes the run
    assert resumed.exit_code == 0, resumed.output
    reference = mltrain.fit(slow, run_dir=tmp_path / "reference").run_dir
    summaries = [json.loads((r / "summary.json").read_text()) for r in (run, reference)]
    assert summaries[0]["status"] == "completed"
    assert summaries[0]["test"] == summaries[1]["test"] and summaries[0]["final"] == summaries[1]["final"]
    weights = [torch.load(r / "checkpoints/last.pt", weights_only=True)["model"] for r in (run, reference)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[1])

    again = cli("fit", "--resume", run)  # a requeued job: done, and says so
    assert again.exit_code == 0 and again.stdout.count("\n") == 1, again.output
    assert "already complete" in again.stdout and "--set train.epochs=" in again.stdout


class FullDisk:
    """A file that takes `room` bytes and then fails as a full disk does (ENOSPC)."""

    def __init__(self, file, room):
        self.file, self.room = file, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_old_one(cli, tmp_path, monkeypatch):
    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1})).run_dir
    before = (run / "checkpoints/last.pt").read_bytes()
    real_save = torch.save
    # torch.save's own writer meets the full disk: it raises a RuntimeError, not the OSError.
    monkeypatch.setattr(torch, "save", lambda obj, file, **kwargs: real_save(obj, FullDisk(file, 4096), **kwargs))
    result = cli("fit", "--resume", run, "--set", "train.epochs=2")
    monkeypatch.undo()
    assert result.exit_code == 1
    one_line(result, "could not write checkpoint")
    assert "No space left on device" in result.stderr and "the previous one is intact" in result.stderr
    assert (run / "checkpoints/last.pt").read_bytes() == before
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_while_resume_trims_the_metrics_is_one_line_and_loses_nothing(cli, tmp_path, monkeypatch):
    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1})).run_dir
    before = files_of(run)

    def on_a_full_disk(path):
        fd, name = temporary_file(path)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)  # the bytes go where every write fails with ENOSPC
        os.close(full)
        return fd, name

    monkeypatch.setattr("mltrain.run_dir.temporary_file", on_a_full_disk)
    result = cli("fit", "--resume", run, "--set", "train.epochs=2")
    monkeypatch.undo()
    assert result.exit_code == 1
    one_line(result, f"could not write {run / 'metrics.jsonl'}: No space left on device")
    after = files_of(run)
    assert {name: after[name] for name in before if name != "train.log"} == \
        {name: data for name, data in before.items() if name != "train.log"}
    assert not [name for name in after if name.endswith(".tmp")]


def test_bytes_that_are_not_a_checkpoint_are_called_so(cli, tmp_path):
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "text.pt").write_text("hello, this is not a checkpoint\n")
    with open(tmp_path / "plain.pt", "wb") as file:
        pickle.dump({"weights": [1.0, 2.0]}, file, protocol=4)
    for name in ("random.pt", "text.pt", "plain.pt"):
        result = cli("eval", tmp_path / name)
        assert result.exit_code == 2
        one_line(result, f"{name}: not a checkpoint")
        assert "weights_only" not in result.stderr and "could run code" not in result.stderr

    torch.save({"format": "mltrain-checkpoint", "run": os.system}, tmp_path / "runs_code.pt")
    result = cli("eval", tmp_path / "runs_code.pt")
    assert result.exit_code == 2
    one_line(result, "it names posix.system, which is neither a tensor nor plain data, so loading it could run code")
    assert "weights_only" not in result.stderr



def test_a_run_directory_that_may_not_be_made_is_refused_before_training(cli, tmp_path, monkeypatch):
    make = Path.mkdir

    def denied(path, *args, **kwargs):
        if path.parent == tmp_path / "runs":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return make(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    result = cli("fit", write_config(tmp_path))
    assert result.exit_code == 2
    assert "cannot create run directory" in result.stderr and "permission denied" in result.stderr
    assert "choose a writable output.dir or --run-dir" in result.stderr and "epoch" not in result.stdout


class MetricsFileTakenAway(Sink):
    """After epoch 1, metrics.jsonl is a directory: the next line cannot be appended."""

    def start(self, run):
        self.run_dir = run.run_dir

    def epoch(self, record):
        if record["epoch"] == 1:
            (self.run_dir / "metrics.jsonl").unlink()
            (self.run_dir / "metrics.jsonl").mkdir()


def test_a_run_file_that_cannot_be_written_fails_the_run_in_one_line(tmp_path):
    config = write_config(tmp_path, train={"epochs": 3, "log_every_steps": 1})
    with pytest.raises(TrainingFailed, match=r"could not write .*metrics\.jsonl: Is a directory") as failed:
        mltrain.fit(config, sinks=[MetricsFileTakenAway()])
    run = only_run(tmp_path)
    assert "what was written before is intact" in str(failed.value)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 1


def test_cutting_metrics_back_stops_at_a_line_that_is_not_a_record(tmp_path):
    run = RunDir.create(tmp_path, "cut")
    lines = ['{"epoch": 1, "step": 4, "train/loss": 1.0}', "7", '{"epoch": 2, "step": "eight"}', "[]"]
    (run.path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (run.path / "metrics.csv").write_text("epoch,step,train/loss\n1,4,1.0\n2,eight,0.5\n")
    run.cut_back(step=10)
    assert (run.path / "metrics.jsonl").read_text() == lines[0] + "\n"  # the rest is not a record of the run
    assert [row["step"] for row in run.records] == [4]
