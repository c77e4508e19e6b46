"""Exact resume: a run stopped at any point and resumed ends bitwise equal to one never stopped."""

import json
import signal
import subprocess
import time

import pytest
import torch

import mltrain

from conftest import MLTRAIN, read_jsonl, write_config

SETTINGS = dict(
    data={"points": 300, "batch_size": 16},
    model={"hidden": [64, 64], "dropout": 0.1},  # dropout draws from the RNG every step
    scheduler={"name": "cosine", "warmup_steps": 10},
    train={"epochs": 3, "checkpoint_every_steps": 7, "log_every_steps": 1, "ema": 0.9},
)


def start(config, run_dir):
    return subprocess.Popen([MLTRAIN, "fit", str(config), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(run_dir, step, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run finished before it could be stopped"
        try:
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached")


def start_resume(run_dir):
    return subprocess.Popen([MLTRAIN, "fit", "--resume", str(run_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def ended(process):
    """A process a failed test leaves running, killed."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()


def outcome(run_dir):
    weights = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return (weights["model"], weights["ema"]["weights"], (run_dir / "metrics.jsonl").read_text(),
            (run_dir / "metrics.csv").read_text(), summary["final"], summary["best"], summary["test"])


def assert_same(a, b):
    for got, want in zip(outcome(a), outcome(b)):
        if isinstance(got, dict) and got and isinstance(next(iter(got.values())), torch.Tensor):
            assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)
        else:
            assert got == want


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, trained in this process: the library sets the seed, threads and
    determinism itself, so it is bitwise the run a fresh `mltrain fit` makes."""
    directory = tmp_path_factory.mktemp("reference")
    config = write_config(directory, **SETTINGS)
    mltrain.fit(config, run_dir=directory / "run")
    return config, directory / "run"


def test_sigkill_then_resume_matches_an_uninterrupted_run(reference, tmp_path):
    """One run killed (SIGKILL) three times: at step 3, before the first checkpoint; at 40, mid-epoch;
    at 59, near an epoch end. Each resume is a fresh `mltrain fit --resume` process killed in its
    turn; the last resume ends it, bitwise equal to the run never stopped."""
    config, reference_run = reference
    run = tmp_path / "run"
    process = start(config, run)
    try:
        for stop_at in (3, 40, 59):
            wait_for_step(run, stop_at, process)
            process.kill()
            process.wait()
            process = start_resume(run) if stop_at != 59 else None
    finally:
        ended(process)
    mltrain.resume(run)
    assert_same(run, reference_run)


def test_signal_writes_a_checkpoint_exits_130_and_resumes_exactly(reference, tmp_path):
    """SIGINT at step 25, then SIGTERM to the resumed process at step 45: each writes a checkpoint and
    exits 130; the last resume ends bitwise equal to the run never stopped."""
    config, reference_run = reference
    run = tmp_path / "run"
    process = start(config, run)
    try:
        for stops, (signum, stop_at) in enumerate(((signal.SIGINT, 25), (signal.SIGTERM, 45)), start=1):
            wait_for_step(run, stop_at, process)
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 130, stderr
            summary = json.loads((run / "summary.json").read_text())
            assert summary["status"] == "interrupted" and summary["steps"] >= stop_at
            assert (run / "train.log").read_text().count("to continue from its last checkpoint") == stops
            saved = torch.load(run / "checkpoints/last.pt", weights_only=True)["step"]
            assert saved == summary["steps"]  # saved on the signal, not at the last scheduled checkpoint
            if signum == signal.SIGINT:
                process = start_resume(run)
    finally:
        ended(process)
    mltrain.resume(run)
    assert_same(run, reference_run)


def test_a_finished_run_can_be_extended(reference, tmp_path, cli):
    config, reference_run = reference
    run = tmp_path / "run"
    assert cli("fit", config, "--run-dir", run, "--set", "train.epochs=1", "--quiet").exit_code == 0
    before = {name: (run / name).read_text() for name in ("config.yaml", "metrics.jsonl", "metrics.csv")}
    again = cli("fit", "--resume", run)  # complete: a requeued job succeeds, and learns how to extend the run
    assert again.exit_code == 0 and again.stdout.count("\n") == 1 and "already complete" in again.stdout
    assert "--set train.epochs=" in again.stdout
    assert cli("fit", "--resume", run, "--set", "optimizer.lr=5").exit_code == 2
    assert {name: (run / name).read_text() for name in before} == before  # a refused resume writes nothing
    extended = cli("fit", "--resume", run, "--set", "train.epochs=2", "--quiet")
    assert extended.exit_code == 0, extended.output
    records = [r for r in read_jsonl(run / "metrics.jsonl") if "train/accuracy" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    # The cosine schedule now spans both epochs: the second trains at a real lr, not at its floor.
    second_epoch_lrs = [r["lr"] for r in read_jsonl(run / "metrics.jsonl") if r["epoch"] == 2 and "grad_norm" in r]
    assert second_epoch_lrs[0] > 0.4 * 0.01  # about half the peak lr, halfway through the new cosine
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 2
    assert "epochs: 2" in (run / "config.yaml").read_text()


def test_resume_refuses_a_change_of_meaning(reference, cli):
    _, reference_run = reference
    for change in ("model.hidden=[8]", "data.noise=0.5", "seed=3"):
        result = cli("fit", "--resume", reference_run, "--set", change, "--set", "train.epochs=9")
        assert result.exit_code == 2 and "resuming cannot change" in result.stderr


def test_a_partial_metrics_line_is_dropped_on_resume(reference, tmp_path):
    config, reference_run = reference
    run = tmp_path / "run"
    process = start(config, run)
    wait_for_step(run, 30, process)
    process.kill()
    process.wait()
    # The records up to the checkpoint's step, then what a crash in the middle of a write leaves:
    # the resume must meet the half-written line itself, not stop at a later record first.
    step = torch.load(run / "checkpoints/last.pt", weights_only=True)["step"]
    whole = [line for line in (run / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= step]
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in whole) + '{"epoch": 2, "st')
    mltrain.resume(run)
    assert_same(run, reference_run)


def test_a_onecycle_run_resumes_at_the_lr_it_had(tmp_path):
    """The one-cycle schedule rises from lr/25 to lr: a resumed run replays it to where it stood."""
    config = write_config(tmp_path, **{**SETTINGS, "scheduler": {"name": "onecycle"}})
    mltrain.fit(config, run_dir=tmp_path / "whole")
    run = tmp_path / "run"
    process = start(config, run)
    wait_for_step(run, 30, process)
    process.kill()
    process.wait()
    mltrain.resume(run)
    assert_same(run, tmp_path / "whole")
