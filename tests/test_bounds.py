"""Bounds on what a command line or a dataset may ask for: --nproc beyond the cores or GPUs, class
ids far above the number in use, arrays beyond a process's or container's memory limit; and
--nproc workers that end with their launcher."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import mltrain.devices
import mltrain.distributed
from helpers import write_config
from mltrain.cli import ending
from mltrain.config import section_config
from mltrain.data import build_data, files
from mltrain.data.user import in_memory
from mltrain.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture
def launches(monkeypatch):
    """The worker counts `fit --nproc` launched (none start: the launcher is replaced)."""
    launched = []
    monkeypatch.setattr(mltrain.distributed, "launch_local", lambda nproc, argv: launched.append(nproc) or 0)
    monkeypatch.setattr(ending, "_held_process_threads", False)
    monkeypatch.setattr(mltrain.devices, "usable_cores", lambda: 2)
    return launched


def gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_nproc_beyond_the_usable_cores_is_refused_before_any_worker_starts(cli, tmp_path, launches, monkeypatch):
    gpus(monkeypatch, 8)  # train.device cpu counts cores, whatever GPUs there are
    config = write_config(tmp_path, train={"device": "cpu"})
    for args in (["--nproc", "64"], ["--nproc", "3", "--device", "cpu"]):
        result = cli("fit", config, *args)
        assert result.exit_code == 2, result.output
        assert f"--nproc {args[1]}: more processes than the 2 usable CPU cores" in result.stderr
        assert "--force" in result.stderr and "Traceback" not in result.output
    assert launches == []
    assert cli("fit", config, "--nproc", "2").exit_code == 0
    assert cli("fit", config, "--nproc", "64", "--force").exit_code == 0
    assert launches == [2, 64]


def test_nproc_beyond_the_visible_gpus_is_refused_on_cuda(cli, tmp_path, launches, monkeypatch):
    gpus(monkeypatch, 1)
    config = write_config(tmp_path)  # train.device auto: CUDA here
    for args in ([], ["--device", "cuda"]):
        result = cli("fit", config, "--nproc", "2", *args)
        assert result.exit_code == 2, result.output
        assert "--nproc 2: more processes than the 1 visible CUDA GPU(s)" in result.stderr
        assert "--nproc 1 (or --nproc auto), or --device cpu" in result.stderr
    assert cli("fit", config, "--nproc", "2", "--force").exit_code == 2  # a process without a GPU cannot train
    assert cli("fit", config, "--nproc", "2", "--device", "cpu").exit_code == 0  # 2 cores
    assert launches == [2]


def test_a_torchrun_process_without_a_gpu_of_its_own_is_one_clear_error(monkeypatch):
    from mltrain.distributed import Distributed
    from mltrain.errors import UserError

    gpus(monkeypatch, 1)
    job = Distributed(rank=3, world_size=4, local_rank=1, local_world_size=2)
    with pytest.raises(UserError, match=r"local rank 1\) has no GPU: this machine has 1 visible CUDA GPU\(s\) for 2 "
                                        r"processes; start at most 1 per machine \(torchrun --nproc-per-node 1\)"):
        job.device_for(torch.device("cuda"))
    assert job.device_for(torch.device("cpu")) == torch.device("cpu")


def test_nproc_on_resume_counts_for_the_runs_own_device(cli, tmp_path, launches, monkeypatch):
    gpus(monkeypatch, 8)
    run = tmp_path / "run"
    run.mkdir()
    write_config(run, name="config", train={"device": "cpu"})
    result = cli("fit", "--resume", run, "--nproc", "4")
    assert result.exit_code == 2 and "2 usable CPU cores" in result.stderr, result.output
    checkpoint = run / "checkpoints/last.pt"  # its run's config.yaml, with --set
    assert cli("fit", "--resume", checkpoint, "--nproc", "4", "--set", "train.device=cuda").exit_code == 0
    assert launches == [4]


def test_a_worker_sets_its_parent_death_signal_at_start(cli, tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(mltrain.distributed, "end_with_launcher", lambda: called.append(True))
    monkeypatch.setenv("WORLD_SIZE", "2")
    cli("fit", tmp_path / "absent.yaml", "--nproc", "2")  # refused: under torchrun; the signal is set first
    assert called == [True]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_worker_ends_when_its_launcher_is_killed(tmp_path):
    ready = tmp_path / "ready"
    worker = ("import pathlib, time\ntry:\n    from mltrain.distributed import end_with_launcher\n"
              "    end_with_launcher()\nexcept ImportError:\n    pass\n"  # (a worker without it outlives)
              f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                                 f"print(subprocess.Popen([sys.executable, '-c', {worker!r}]).pid, flush=True); "
                                 "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                                env={k: v for k, v in os.environ.items() if k != "MLTRAIN_LAUNCHER_PID"})
    pid = int(launcher.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the worker did not start"
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the worker outlived its launcher"
    finally:
        launcher.kill()
        if alive(pid):
            os.kill(pid, 9)


def alive(pid):
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_worker_whose_launcher_died_before_it_started_ends_at_once():
    code = "from mltrain.distributed import end_with_launcher; end_with_launcher(); print('trained on')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, mltrain.distributed.LAUNCHER_PID: str(os.getpid() + 10**6)})
    assert result.returncode == -15 and "trained on" not in result.stdout, result.stderr


def write_npz(path, y_train, **arrays):
    np.savez(path, x_train=np.zeros((len(y_train), 3), np.float32), y_train=y_train, **arrays)
    return str(path)


def npz_data(path):
    return build_data(section_config("data", dataset="npz", path=path, task="classification"), 0, CPU)


def test_npz_class_ids_far_above_the_number_in_use_are_refused(tmp_path):
    path = write_npz(tmp_path / "arrays.npz", np.r_[np.arange(9) % 3, 10**6])
    with pytest.raises(UserError) as refused:
        npz_data(path)
    message = str(refused.value)
    assert f"data.path {path}: y_train has class id 1000000 but only 4 distinct ids" in message
    assert "relabel y to 0..3" in message and "\n" not in message
    # unused ids within the margin are kept: a subset of a larger label set
    assert npz_data(write_npz(tmp_path / "subset.npz", np.array([0, 7, 5000, 7]))).spec.num_classes == 5001


def test_user_dataset_class_ids_far_above_the_number_in_use_are_refused():
    x = np.zeros((4, 2), np.float32)
    for returned, split, highest in (({"train": (x, np.array([0, 1, 0, 10**6]))}, "train", 10**6),
                                     ({"train": (x, np.array([0, 1, 0, 1])), "val": (x, np.array([0, 1, 10**12, 1]))},
                                      "val", 10**12)):
        with pytest.raises(UserError) as refused:
            in_memory("mine", {"val": (x, np.array([0, 1, 1, 0])), **returned}, 0.25, 0)
        assert f"dataset 'mine': the {split} split has class id {highest}" in str(refused.value)
        assert "but the splits use only 3 distinct ids; relabel y to 0..2" in str(refused.value)
    named = in_memory("mine", {"train": (x, np.array([0, 1, 0, 20_000])), "val": (x, np.array([0, 1, 1, 0])),
                               "classes": [str(i) for i in range(20_001)]}, 0.25, 0)
    assert named.spec.num_classes == 20_001  # named classes are the user's own count


def cgroup(tmp_path, monkeypatch, limit, current):
    (tmp_path / "memory.max").write_text(f"{limit}\n")
    (tmp_path / "memory.current").write_text(f"{current}\n")
    monkeypatch.setattr(files, "CGROUP", tmp_path)


def test_available_memory_respects_the_cgroup_limit(tmp_path, monkeypatch):
    cgroup(tmp_path, monkeypatch, 3 * 2**20, 2 * 2**20)
    assert files.available_memory() == 2**20
    cgroup(tmp_path, monkeypatch, "max", 2 * 2**20)
    assert files.available_memory() > 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the mapped size from /proc")
def test_available_memory_respects_the_address_space_limit(monkeypatch):
    import resource

    mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (mapped + 2**20, resource.RLIM_INFINITY))
    assert files.available_memory() <= 2**20


def test_npz_beyond_the_containers_memory_is_refused(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "arrays.npz", np.arange(20_000) % 2)  # about 0.4 MiB once loaded
    cgroup(tmp_path, monkeypatch, 10 * 2**20, 10 * 2**20 - 2**19)
    with pytest.raises(UserError, match="more than half the memory free"):
        npz_data(path)
    cgroup(tmp_path, monkeypatch, 10 * 2**20, 8 * 2**20)
    assert npz_data(path).spec.num_classes == 2


def test_nproc_auto_is_one_process_per_visible_gpu_and_one_without(cli, tmp_path, launches, monkeypatch):
    gpus(monkeypatch, 3)
    config = write_config(tmp_path)  # train.device auto: CUDA here
    assert cli("fit", config, "--nproc", "auto").exit_code == 0
    assert launches == [3]
    gpus(monkeypatch, 0)
    result = cli("fit", config, "--nproc", "auto", "--quiet")  # no GPU: one process, which trains here
    assert result.exit_code == 0 and launches == [3] and "done in" in result.stdout, result.output
    for bad in ("0", "two", "-1"):
        result = cli("fit", config, "--nproc", bad)
        assert result.exit_code == 2 and f"--nproc {bad}: give a whole number" in result.stderr, result.output
