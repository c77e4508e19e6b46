"""Two CPU processes with gloo, launched by `--nproc 2` (torch's elastic launcher) or by torchrun."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import MLTRAIN
from test_resume import wait_for_step

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
pytestmark = pytest.mark.cpu_only(reason="two processes on one machine: gloo on the CPU; on CUDA each needs a GPU of its own")


def config(directory, name="ddp", batch_size=16, **train):
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 3,
        "data": {"dataset": "spirals", "points": 200, "batch_size": batch_size},
        "model": {"arch": "mlp", "hidden": [32, 32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "scheduler": {"name": "cosine", "warmup_steps": 5},
        "train": {"epochs": 1, "log_every_steps": 1, "threads": 1, **train},
        "output": {"dir": str(directory / "runs")},
    }))
    return path


def fit(*args, timeout=120):
    process = subprocess.Popen([MLTRAIN, "fit", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        stop_job(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def stop_job(launcher, known_workers=()):
    """Kill a launcher (fit --nproc, torchrun) and its workers, which run in sessions of their own
    (those of `known_workers` too: a launcher that has ended no longer names them)."""
    workers = {*known_workers, *(worker_pids(launcher.pid) if launcher.poll() is None else [])}
    launcher.kill()
    launcher.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def weights(run):
    return torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]


def test_two_processes_with_batch_b_end_as_one_process_with_batch_2b(tmp_path):
    two = fit(config(tmp_path, "two", batch_size=16), "--nproc", "2", "--run-dir", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    one = fit(config(tmp_path, "one", batch_size=32), "--run-dir", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert all(torch.allclose(a[key], b[key], atol=1e-5) for key in a)  # 432 samples: the last batch is uneven
    summary = json.loads((tmp_path / "two/summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 32
    assert summary["final"]["train/loss"] == pytest.approx(
        json.loads((tmp_path / "one/summary.json").read_text())["final"]["train/loss"], rel=1e-5)

    # One writer: one run directory, one train.log with one line per epoch, printed once.
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_dir()) == ["one", "two"]
    log = (tmp_path / "two/train.log").read_text()
    assert log.count("epoch 1/1") == 1 and two.stdout.count("epoch 1/1") == 1


def worker_pids(launcher: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def kill_a_worker_at_step(config, run, step) -> tuple[int, str, float]:
    """`fit config --nproc 2` into `run`, its last worker killed with SIGKILL once metrics.jsonl
    reaches `step`: the launcher's exit code, its stderr, and the seconds it took to end."""
    launcher = subprocess.Popen([MLTRAIN, "fit", str(config), "--nproc", "2", "--run-dir", str(run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        wait_for_step(run, step, launcher)
        workers = worker_pids(launcher.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        started = time.monotonic()
        _, stderr = launcher.communicate(timeout=30)
        return launcher.returncode, stderr, time.monotonic() - started
    finally:
        stop_job(launcher, workers)  # the survivor too, should it hang once its launcher has ended


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_rendezvous_through_torchrun(tmp_path):
    """Two `torchrun --nnodes 2` invocations on this machine stand for two machines."""
    path = config(tmp_path)
    command = [TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "test", "-m", "mltrain", "fit", str(path),
               "--run-dir", str(tmp_path / "run")]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=120) for node in nodes]
    finally:
        for node in nodes:
            stop_job(node)
    assert all(node.returncode == 0 for node in nodes), outputs
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert sum(output[0].count("epoch 1/1") for output in outputs) == 1  # rank 0 alone printed


def test_nproc_is_refused_under_torchrun_and_bad_configs_stop_before_the_workers(tmp_path):
    env = {**os.environ, "WORLD_SIZE": "2"}
    result = subprocess.run([MLTRAIN, "fit", str(config(tmp_path)), "--nproc", "2"], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 2 and "leave --nproc out" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {lr: -1}\n")
    result = fit(bad, "--nproc", "2")
    assert result.returncode == 2 and result.stderr.count("must be above 0") == 1


def test_ctrl_c_to_the_launcher_saves_once_and_exits_130(tmp_path):
    path = config(tmp_path, epochs=1000)
    run = tmp_path / "run"
    launcher = subprocess.Popen([MLTRAIN, "fit", str(path), "--nproc", "2", "--run-dir", str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run, 30, launcher)
        launcher.send_signal(signal.SIGINT)
        stdout, stderr = launcher.communicate(timeout=30)
    finally:
        stop_job(launcher)
    assert launcher.returncode == 130, stderr
    assert stdout.count("interrupted at step") == 1 and stderr == "interrupted\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["step"] == summary["steps"]


def test_resuming_with_another_number_of_processes_says_the_order_changes(tmp_path):
    path = config(tmp_path, epochs=2)
    first = fit(path, "--run-dir", tmp_path / "run", "--set", "train.epochs=1")
    assert first.returncode == 0, first.stderr
    resumed = fit("--resume", tmp_path / "run", "--nproc", "2", "--set", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming with 2 process(es) a run last trained with 1: the global batch is now 32" in resumed.stdout
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2 and summary["processes"] == 2
    assert summary["steps"] == 2 * 14  # 432 samples: 14 global batches of 2 x 16 an epoch, counted anew
    logged = [(r["epoch"], r["step"]) for r in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
              if "grad_norm" in r]
    # Epoch 1's 27 steps of 16 samples kept, renumbered in steps of 32: step k became k * 16 // 32, its end 14.
    assert logged == [(1, k // 2) for k in range(1, 27)] + [(1, 14)] + [(2, step) for step in range(15, 29)]
    rows = (tmp_path / "run/metrics.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["1", "14"], ["2", "28"]]  # epoch 1's row is kept
