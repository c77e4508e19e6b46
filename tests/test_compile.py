"""train.compile's modes and data.drop_last: the whole step compiled, static shapes, exact resume.

torch.compile costs seconds per model on the CPU: one compiled run stopped and resumed, the rest
without compiling."""

import os
import signal

import pytest
import torch

import mltrain
from conftest import read_jsonl, write_config
from mltrain.config import load_config
from mltrain.data.stream import SeededPermutation, drops_last
from mltrain.errors import UserError
from mltrain.learner import compile_mode
from mltrain.signals import StopRequested
from mltrain.sinks import Sink
from test_resume import assert_same

SETTINGS = dict(
    data={"points": 100, "batch_size": 32},  # 200 training samples: 6 full batches and 8 left over
    model={"hidden": [16], "dropout": 0.1},  # dropout draws from the RNG every step, inside the graph
    scheduler={"name": "cosine", "warmup_steps": 3},
    train={"epochs": 2, "compile": "reduce-overhead", "checkpoint_every_steps": 5, "log_every_steps": 1,
           "ema": 0.9},
)


def test_compile_takes_a_mode_and_drop_last_follows_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {compile: true}\n")
    assert compile_mode(load_config(config).train.compile) == "default"  # configs of before keep working
    assert compile_mode(load_config(config, ["train.compile=false"]).train.compile) is None
    assert load_config(config, ["train.compile=max-autotune"]).train.compile == "max-autotune"
    with pytest.raises(UserError, match="train.compile.*choose from: default, reduce-overhead, max-autotune"):
        load_config(config, ["train.compile=fast"])
    assert [drops_last("auto", mode) for mode in (None, "default", "reduce-overhead", "max-autotune")] == \
        [False, False, True, True]
    assert drops_last(True, None) and not drops_last(False, "reduce-overhead")
    x, y = torch.arange(100.0).unsqueeze(1), torch.arange(100)
    kept, dropped = SeededPermutation(x, y, 16, 0), SeededPermutation(x, y, 16, 0, drop_last=True)
    assert (kept.micro_batches_in_epoch(1), dropped.micro_batches_in_epoch(1)) == (7, 6)
    assert [len(batch) for batch, _, _ in dropped.batches(1, 0, 1)] == [16] * 6
    assert dropped.state_dict() == {"epoch": 1, "served": 96}
    second_of_two = SeededPermutation(x, y, 16, 0, drop_last=True)
    assert second_of_two.micro_batches_in_epoch(2) == 3
    assert [(len(batch), size) for batch, _, size in second_of_two.batches(1, 1, 2)] == [(16, 32)] * 3


def test_drop_last_with_fewer_samples_than_a_batch_is_refused_at_the_start(tmp_path, cli):
    few = write_config(tmp_path, data={"points": 100, "batch_size": 32, "limit": 10, "drop_last": True})
    refused = cli("fit", few, "--quiet")
    assert refused.exit_code == 2, refused.output
    assert "10 training samples" in refused.output and "data.batch_size 32 x 1 process" in refused.output
    auto = ["--set", "data.drop_last=auto", "--set", "train.compile=reduce-overhead"]
    for command in (["fit", few, "--quiet", *auto], ["preflight", few, *auto]):
        result = cli(*command)
        assert result.exit_code == 2, result.output
        assert "data.drop_last is on (true, or auto, which turns it on for train.compile reduce-overhead" \
            in result.output


class StopAt(Sink):
    """Sends this process SIGINT once step `step` is logged: the run stops as it would on Ctrl-C."""

    def __init__(self, step: int):
        self.at = step

    def step(self, record):
        if record["step"] == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_a_reduce_overhead_run_keeps_batches_full_and_resumes_exactly(tmp_path):
    whole = mltrain.fit(write_config(tmp_path, name="whole", **SETTINGS), quiet=True).run_dir
    epoch_ends = [r["step"] for r in read_jsonl(whole / "metrics.jsonl") if "val/loss" in r]
    assert epoch_ends == [6, 12]  # the last 8 samples of each epoch left out: 6 steps an epoch, not 7
    with pytest.raises(StopRequested):
        mltrain.fit(write_config(tmp_path, name="stopped", **SETTINGS), quiet=True, sinks=[StopAt(4)])
    stopped = next((tmp_path / "runs").glob("stopped-*"))
    assert torch.load(stopped / "checkpoints/last.pt", weights_only=True)["step"] == 4
    with pytest.raises(UserError, match="train.compile: False would keep the last partial batch"):
        mltrain.resume(stopped, overrides=["train.compile=false"], quiet=True)  # the epochs would change length
    mltrain.resume(stopped, quiet=True)
    assert_same(stopped, whole)  # weights, EMA weights, every metric: bitwise
    weights = torch.load(whole / "checkpoints/last.pt", weights_only=True)["model"]
    assert not any("_orig_mod" in key for key in weights)
