"""One way back from a checkpoint: the model without the data, checked states, older formats."""

import json
import subprocess

import numpy as np
import pytest
import torch

import mltrain
from conftest import MLTRAIN, write_config
from formats import source_config
from mltrain.data import DataSpec
from mltrain.errors import UserError
from mltrain.restore import restore


def write_arrays(path, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(120) % classes
    x = (rng.normal(size=(120, 6)) + y[:, None]).astype(np.float32)
    np.savez(path, x_train=x, y_train=y)


def test_the_model_is_rebuilt_from_the_checkpoint_alone(tmp_path):
    write_arrays(tmp_path / "arrays.npz")
    config = source_config(tmp_path, {"dataset": "npz", "path": "arrays.npz", "val_split": 0.2},
                           train={"epochs": 2, "ema": 0.9})
    run = mltrain.fit(config).run_dir
    (tmp_path / "arrays.npz").unlink()  # predict and export will have no dataset either

    restored = restore(run)
    assert restored.path == run / "checkpoints/best.pt" and restored.run_dir == run
    assert restored.spec == DataSpec((6,), 3, ("0", "1", "2"))
    assert restored.cfg.data.dataset == "npz" and restored.checkpoint["format_version"] == 2
    ema = restored.checkpoint["ema"]["weights"]
    assert all(torch.equal(restored.model.state_dict()[name].cpu(), ema[name]) for name in ema)
    assert restored.model(torch.zeros(4, 6, device=restored.learner.device)).shape == (4, 3)
    with pytest.raises(UserError, match="arrays.npz"):
        restored.data()


def test_eval_refuses_data_the_model_was_not_trained_for(cli, tmp_path):
    write_arrays(tmp_path / "arrays.npz")
    run = mltrain.fit(source_config(tmp_path, {"dataset": "npz", "path": "arrays.npz"}, train={"epochs": 1})).run_dir
    write_arrays(tmp_path / "arrays.npz", classes=5)
    result = cli("eval", run)
    assert result.exit_code == 2 and "in 5 classes" in result.stderr and "trained on samples (6,) in 3 classes" \
        in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch run (Adam, fused on the CPU), and the 2-epoch run it should extend into."""
    directory = tmp_path_factory.mktemp("trained")
    settings = dict(scheduler={"name": "constant"}, model={"dropout": 0.1})
    short = mltrain.fit(write_config(directory, name="short", train={"epochs": 1}, **settings),
                        run_dir=directory / "short").run_dir
    long = mltrain.fit(write_config(directory, name="long", train={"epochs": 2}, **settings),
                       run_dir=directory / "long").run_dir
    return short, long


def copy_run(run, destination):
    subprocess.run(["cp", "-r", str(run), str(destination)], check=True)
    return destination


def edit_checkpoint(path, change):
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)


def wrong_optimizer_shape(checkpoint):
    state = checkpoint["optimizer"]["state"][0]
    state["exp_avg"] = torch.zeros(state["exp_avg"].numel() + 3)


def negative_step(checkpoint):
    checkpoint["step"] = checkpoint["position"]["step"] = -3


def fractional_position(checkpoint):
    checkpoint["position"]["epoch_step"] = 2.5


def wrong_weight_shape(checkpoint):
    checkpoint["model"]["1.weight"] = torch.zeros(5, 5)  # the first layer's (32, 2) weight


def stream_ahead_of_the_position(checkpoint):
    checkpoint["position"]["epoch_step"] = 1  # mid-epoch, while the data stream had served the whole epoch


def garbage_schedule(checkpoint):
    checkpoint["scheduler"] = "garbage"


def damaged_per_process(checkpoint):
    checkpoint["per_process"] = 5


@pytest.mark.parametrize("tamper, needles", [
    (wrong_optimizer_shape, ["optimizer state exp_avg of 1.weight is (67,)", "the parameter is (32, 2)"]),
    (negative_step, ["step is -3, not a whole number"]),
    (fractional_position, ["epoch_step is 2.5, not a whole number"]),
    (wrong_weight_shape, ["1.weight is (5, 5) float32", "(32, 2) float32"]),
    (stream_ahead_of_the_position, ["the data stream stood at"]),
    (garbage_schedule, ["the schedule state is not a mapping"]),
    (damaged_per_process, ["per_process should hold one mapping"]),
])
def test_an_edited_checkpoint_is_refused_before_any_kernel_runs(trained, tmp_path, tamper, needles):
    """A subprocess: an optimizer kernel fed a state of the wrong shape corrupts memory (abort)."""
    run = copy_run(trained[0], tmp_path / "run")
    edit_checkpoint(run / "checkpoints/last.pt", tamper)
    result = subprocess.run([MLTRAIN, "fit", "--resume", str(run), "--set", "train.epochs=2"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "last.pt" in result.stderr and "Traceback" not in result.stderr
    assert all(needle in result.stderr for needle in needles), result.stderr
    assert "damaged or was edited" in result.stderr or "do not fit" in result.stderr


def missing_moment(checkpoint):
    del checkpoint["optimizer"]["state"][0]["exp_avg"]


def missing_lr(checkpoint):
    del checkpoint["optimizer"]["param_groups"][0]["lr"]


def missing_numpy_rng(checkpoint):
    del checkpoint["rng"]["numpy"]


def foreign_data_state(checkpoint):
    checkpoint["data_state"] = {"vocabulary": ["a", "b"]}


@pytest.mark.parametrize("tamper, needle, commands", [
    (missing_moment, "the optimizer state of 1.weight has no exp_avg", ["resume"]),
    (missing_lr, "the optimizer state has no setting lr", ["resume"]),
    (missing_numpy_rng, "RNG states could not be restored: 'numpy'", ["resume"]),
    (foreign_data_state, "the data encoding (data_state) could not be restored", ["resume", "eval"]),
])
def test_a_checkpoint_missing_state_is_refused_in_one_line(trained, tmp_path, cli, tamper, needle, commands):
    run = copy_run(trained[0], tmp_path / "run")
    for name in ("best.pt", "last.pt"):
        edit_checkpoint(run / "checkpoints" / name, tamper)
    for command in commands:
        result = cli(*(["fit", "--resume", run, "--set", "train.epochs=2"] if command == "resume" else ["eval", run]))
        assert result.exit_code == 2, result.output
        assert needle in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_edited_weights_are_refused_by_eval(trained, tmp_path, cli):
    run = copy_run(trained[0], tmp_path / "run")
    edit_checkpoint(run / "checkpoints/best.pt", wrong_weight_shape)
    result = cli("eval", run)
    assert result.exit_code == 2 and "best.pt: the model weights: 1.weight is (5, 5)" in result.stderr


def to_version_1(path):
    """The layout format version 1 wrote: no spec; `progress` beside epoch and step, no position."""
    def convert(checkpoint):
        position = checkpoint.pop("position")
        del checkpoint["spec"]
        checkpoint["progress"] = {key: position[key] for key in ("epoch_step", "epochs_completed", "samples_seen",
                                                                 "epoch_seconds", "train_seconds", "elapsed_s")}
        checkpoint["progress"]["stopped_early"] = position["stopped"]
        checkpoint["format_version"] = 1

    edit_checkpoint(path, convert)


def test_a_version_1_checkpoint_still_evaluates_and_resumes_exactly(trained, tmp_path, cli):
    short, long = trained
    run = copy_run(short, tmp_path / "run")
    before = json.loads(cli("eval", run, "--json").stdout)
    for name in ("best.pt", "last.pt"):
        to_version_1(run / "checkpoints" / name)
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["format_version"] == 1

    after = cli("eval", run, "--json")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["metrics"] == before["metrics"]

    resumed = cli("fit", "--resume", run, "--set", "train.epochs=2")
    assert resumed.exit_code == 0, resumed.output
    weights = [torch.load(r / "checkpoints/last.pt", weights_only=True) for r in (run, long)]
    assert weights[0]["format_version"] == 2 and weights[0]["spec"] == weights[1]["spec"]
    assert all(torch.equal(weights[0]["model"][k], weights[1]["model"][k]) for k in weights[1]["model"])
    summaries = [json.loads((r / "summary.json").read_text()) for r in (run, long)]
    assert summaries[0]["final"] == summaries[1]["final"] and summaries[0]["test"] == summaries[1]["test"]
    assert (run / "metrics.csv").read_text() == (long / "metrics.csv").read_text()


def test_a_newer_format_is_refused_naming_its_version(trained, tmp_path, cli):
    run = copy_run(trained[0], tmp_path / "run")
    edit_checkpoint(run / "checkpoints/best.pt", lambda checkpoint: checkpoint.update(format_version=7))
    result = cli("eval", run)
    assert result.exit_code == 2
    assert "format version 7 is newer" in result.stderr and "upgrade mltrain" in result.stderr


def test_sample_needs_only_the_checkpoint(tmp_path, cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cat sat on a mat. " * 40)
    config = source_config(tmp_path, {"dataset": "text", "path": "corpus.txt", "block_size": 8, "windows": 64},
                           {"arch": "gpt", "d_model": 16, "heads": 2, "layers": 1},
                           train={"epochs": 1, "monitor": "val/loss"})
    run = mltrain.fit(config).run_dir
    corpus.unlink()
    result = cli("sample", run, "--prompt", "a c", "--tokens", "10", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("a c") and len(result.stdout.rstrip("\n")) == 13
