"""train.strategy fsdp: FSDP2 on two CPU processes with gloo, and its sharded checkpoints."""

import os
import pickle
import time
from pathlib import Path

import pytest
import torch
import yaml

import mltrain
from mltrain import sharded_checkpoint
from mltrain.config import load_config
from mltrain.distributed import Distributed
from mltrain.errors import ConfigError, UserError
from mltrain.export import export
from mltrain.sample import sample_text
from test_distributed import fit, kill_a_worker_at_step

TEXT = "the quick brown fox jumps over the lazy dog; a config names the model and the data.\n" * 40


def gpt_config(directory, strategy):
    (directory / "corpus.txt").write_text(TEXT)
    path = directory / f"{strategy}.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 5,
        "data": {"dataset": "text", "path": "corpus.txt", "block_size": 16, "windows": 160, "batch_size": 8},
        "model": {"arch": "gpt", "d_model": 32, "heads": 2, "layers": 2, "dropout": 0.1},
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.1},
        "train": {"epochs": 2, "log_every_steps": 1, "checkpoint_every_steps": 5, "threads": 1, "ema": 0.9,
                  "strategy": strategy},
        "output": {"dir": str(directory / "runs")},
    }))
    return path


def best_weights(run):
    return torch.load(run / "checkpoints/best.pt", weights_only=True)["model"]


@pytest.mark.cpu_only(reason="two processes on one machine: gloo on the CPU; on CUDA each needs a GPU of its own")
def test_fsdp_trains_as_ddp_resumes_bitwise_after_a_killed_worker_and_its_run_evaluates(tmp_path, capsys):
    ddp = fit(gpt_config(tmp_path, "ddp"), "--nproc", "2", "--run-dir", tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr
    path = gpt_config(tmp_path, "fsdp")
    whole = fit(path, "--nproc", "2", "--run-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    a, b = best_weights(tmp_path / "ddp"), best_weights(tmp_path / "whole")
    assert all(torch.allclose(a[key], b[key], rtol=0, atol=1e-5) for key in a)
    checkpoints = tmp_path / "whole/checkpoints"
    assert os.readlink(checkpoints / "last").startswith("last-") and (checkpoints / "last/.metadata").is_file()
    assert not (checkpoints / "last.pt").exists()
    summary = yaml.safe_load((tmp_path / "whole/summary.json").read_text())
    ddp_summary = yaml.safe_load((tmp_path / "ddp/summary.json").read_text())
    assert summary["bytes_per_process"]["parameters"] < 0.6 * ddp_summary["bytes_per_process"]["parameters"]

    run = tmp_path / "killed"
    assert kill_a_worker_at_step(path, run, 12)[0] != 0
    resumed = fit("--resume", run, "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    a, b = best_weights(tmp_path / "whole"), best_weights(run)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "whole/metrics.jsonl").read_text()
    assert sorted(path.name for path in (run / "checkpoints").iterdir())[-1].startswith("last-")  # one kept

    # What reads best.pt reads it as from any run; one process resumes the shards, resharded.
    scored = mltrain.evaluate(run)["metrics"]
    assert scored["val/loss"] == pytest.approx(yaml.safe_load((run / "summary.json").read_text())["best"]["value"])
    assert sample_text(run, prompt="the ", tokens=8).startswith("the ")
    assert export(run, "safetensors").path.is_file()
    longer = mltrain.resume(tmp_path / "whole", overrides=["train.epochs=3"], quiet=True)
    assert longer.summary["status"] == "completed" and longer.summary["epochs_completed"] == 3
    assert "resuming with 1 process(es) a run last trained with 2" in capsys.readouterr().out
    with pytest.raises(UserError, match="in shards beside it"):
        mltrain.evaluate(tmp_path / "killed/checkpoints/last/trainer.pt")

    # A whole checkpoint (ddp's last.pt) resumes sharded, and the sharded state takes its place.
    sharded = fit("--resume", tmp_path / "ddp", "--nproc", "2", "--set", "train.strategy=fsdp", "--set",
                  "train.epochs=3")
    assert sharded.returncode == 0, sharded.stderr
    assert "(resumed at step " in sharded.stdout  # from ddp's last.pt, not from the start
    assert yaml.safe_load((tmp_path / "ddp/summary.json").read_text())["epochs_completed"] == 3
    assert not (tmp_path / "ddp/checkpoints/last.pt").exists() and (tmp_path / "ddp/checkpoints/last").is_dir()


def test_only_complete_saves_are_linked_and_a_directory_naming_code_is_refused(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last-7").mkdir()  # a save killed before its link moved
    job = Distributed()
    for value in (1.0, 2.0):
        sharded_checkpoint.save({"model": {"w": torch.full((3,), value)}}, {"step": value}, checkpoints, job)
    assert os.readlink(checkpoints / "last") == "last-9"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["last", "last-9"]
    loaded = {"model": {"w": torch.zeros(3)}}
    sharded_checkpoint.load(loaded, checkpoints / "last")
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))

    marker = tmp_path / "ran"

    class Planted:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    (checkpoints / "last/.metadata").write_bytes(pickle.dumps(Planted()))
    with pytest.raises(UserError, match="refused to load: its metadata names posix.system"):
        sharded_checkpoint.load(loaded, checkpoints / "last")
    # A dotted name reaches through an allowed module's attributes (protocol 4): refused by name.
    dotted = "torch.distributed.checkpoint.metadata\nos.system\n".encode()
    command = f"touch {marker}".encode()
    (checkpoints / "last/.metadata").write_bytes(
        b"\x80\x04\x8c" + bytes([len(dotted.split(b"\n")[0])]) + dotted.split(b"\n")[0]
        + b"\x8c" + bytes([len(b"os.system")]) + b"os.system\x93\x8c" + bytes([len(command)]) + command + b"\x85R.")
    with pytest.raises(UserError, match="metadata names torch.distributed.checkpoint.metadata.os.system"):
        sharded_checkpoint.load(loaded, checkpoints / "last")
    # An allowed class's attributes rewritten (BUILD on the class): refused, the class untouched.
    (checkpoints / "last/.metadata").write_bytes(
        b"\x80\x04\x8c\x07pathlib\x8c\tPosixPath\x93N}\x8c\x0b__truediv__\x8c\x07pathlib\x8c\tPosixPath\x93s\x86b.")
    with pytest.raises(UserError, match="sets the attributes of a class"):
        sharded_checkpoint.load(loaded, checkpoints / "last")
    assert str(Path("/etc") / "passwd") == "/etc/passwd"
    time.sleep(0.1)
    assert not marker.exists()


def test_sync_batchnorm_under_fsdp_is_refused_at_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "spirals"}, "model": {"arch": "mlp"},
                                    "train": {"strategy": "fsdp", "sync_batchnorm": True}}))
    with pytest.raises(ConfigError, match="SyncBatchNorm does not run under train.strategy fsdp"):
        load_config(path)
