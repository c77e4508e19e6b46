"""mltrain preflight: each check on a case built to fail it, a clean config passing them all, and the
cheap subset that fit runs."""

import json

import numpy as np
import pytest
import torch

from helpers import write_config, write_package
from mltrain.checks.data_checks import labels_in_range
from mltrain.checks.preflight import (
    batch_independence, learning_rate, look_at_batch, run_cheap_checks, schedule_sanity,
)
from mltrain.config import load_config
from mltrain.data import DataSpec, DataSplits
from mltrain.startup import prepare

NETS = '''
import torch
from torch import nn


def _features(input_shape):
    features = 1
    for side in input_shape:
        features *= side
    return features


class MixesBatch(nn.Module):
    """Reads the batch through a transposed view, so each output sees other samples' inputs."""

    def __init__(self, input_shape, num_outputs, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(_features(input_shape), width), nn.ReLU(), nn.Linear(width, num_outputs))

    def forward(self, x):
        return self.body(x.flatten(1).t().reshape(len(x), -1))


class IgnoresInput(nn.Module):
    """One learned output for every sample, whatever its input."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_outputs))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


class DeadLayer(nn.Module):
    """A layer whose output is multiplied by zero: its weights never get a gradient."""

    def __init__(self, input_shape, num_outputs, width: int = 32):
        super().__init__()
        self.first = nn.Linear(_features(input_shape), width)
        self.dead = nn.Linear(width, width)
        self.last = nn.Linear(width, num_outputs)

    def forward(self, x):
        h = torch.relu(self.first(x.flatten(1)))
        return self.last(h + 0.0 * self.dead(h))


class Loud(nn.Sequential):
    """An output layer initialised 30 times too large."""

    def __init__(self, input_shape, num_outputs):
        super().__init__(nn.Flatten(), nn.Linear(_features(input_shape), 32), nn.Tanh(), nn.Linear(32, num_outputs))
        with torch.no_grad():
            self[-1].weight.mul_(30.0)


class BatchStatistics(nn.Sequential):
    """Batch norm that normalises every batch with its own statistics, even in eval mode."""

    def __init__(self, input_shape, num_outputs):
        super().__init__(nn.Flatten(), nn.Linear(_features(input_shape), 16),
                         nn.BatchNorm1d(16, track_running_stats=False), nn.ReLU(), nn.Linear(16, num_outputs))
'''

DATA = '''
import numpy as np


def messy(seed: int = 0):
    """Imbalanced classes (200 to 10), a constant column, and val samples copied from train, one with a NaN."""
    rng = np.random.default_rng(seed)
    y = np.array([0] * 200 + [1] * 10)
    x = rng.standard_normal((210, 3))
    x[:, 2] = 1.5
    val = x[100:120].copy()
    val[5, 0] = np.nan
    return {"train": (x, y), "val": (val, y[100:120].copy())}
'''


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    return write_package(tmp_path_factory.mktemp("site"), "badnets", {"nets": NETS, "data": DATA})


@pytest.fixture
def importable(user_package, monkeypatch):
    monkeypatch.syspath_prepend(str(user_package))


def checks_of(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"]}


def run_preflight(cli, config, *args):
    result = cli("preflight", config, "--json", *args)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def test_a_clean_config_passes_every_check_and_writes_its_report(cli, tmp_path):
    result, report = run_preflight(cli, write_config(tmp_path))
    assert result.exit_code == 0, result.output
    checks = checks_of(report)
    assert list(checks) == [
        "non-finite values", "labels in range", "class balance", "train/val/test duplicates", "constant features",
        "loss at init", "dumb baselines", "input-independent baseline", "gradients reach every weight",
        "batch independence", "overfit a tiny subset", "learning rate", "schedule", "look at the first batch"]
    assert {check["status"] for check in checks.values()} == {"pass"}, result.stdout
    assert all("fix" not in check for check in checks.values())
    baseline = checks["dumb baselines"]["values"]
    assert baseline["split"] == "val" and baseline["val/accuracy"] == pytest.approx(1 / 3, abs=0.05)
    blind = checks["input-independent baseline"]["values"]
    assert blind["real_loss"] < 0.5 * blind["zeroed_loss"]
    assert checks["look at the first batch"]["values"]["table"]["columns"][0] == "feature"  # 2-D points: a table
    directory = tmp_path / "runs" / "tiny-preflight"  # the default: beside the runs
    assert report["output_dir"] == str(directory) and (directory / "plots" / "preflight-lr.png").is_file()
    assert json.loads((directory / "preflight.json").read_text()) == report


def test_images_get_a_grid_and_the_human_table(cli, tmp_path):
    config = write_config(tmp_path, data={"dataset": "digits", "batch_size": 16}, replace=True)
    result = cli("preflight", config, "--output-dir", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "plots" / "preflight-batch.png").is_file()
    assert not (tmp_path / "runs").exists()
    for text in ("batch independence", "overfit a tiny subset", "majority class", "PASS: no check failed"):
        assert text in result.stdout


def test_a_forward_that_mixes_the_batch_fails_batch_independence(cli, tmp_path, importable):
    result, report = run_preflight(cli, write_config(tmp_path, model={"arch": "badnets.nets:MixesBatch"}, replace=True))
    assert result.exit_code == 1
    check = checks_of(report)["batch independence"]
    assert check["status"] == "fail" and check["values"]["mixed"] and "reshape" in check["fix"]


def test_a_model_that_ignores_its_input_fails_the_input_independent_baseline(cli, tmp_path, importable):
    config = write_config(tmp_path, model={"arch": "badnets.nets:IgnoresInput"}, replace=True)
    result, report = run_preflight(cli, config)
    assert result.exit_code == 1
    check = checks_of(report)["input-independent baseline"]
    assert check["status"] == "fail" and "does not use its input" in check["fix"]
    assert check["values"]["real_loss"] == pytest.approx(check["values"]["zeroed_loss"])
    assert checks_of(report)["batch independence"]["status"] == "pass"  # no output depends on any input


def test_a_dead_layer_fails_gradient_flow_by_name(cli, tmp_path, importable):
    result, report = run_preflight(cli, write_config(tmp_path, model={"arch": "badnets.nets:DeadLayer"}, replace=True))
    assert result.exit_code == 1
    check = checks_of(report)["gradients reach every weight"]
    assert check["status"] == "fail" and check["values"]["zero_gradient"] == ["dead.weight", "dead.bias"]
    assert "dead.weight" in check["detail"]


def test_samples_leaked_from_train_into_test_fail_with_counts_and_examples(cli, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    test_x, test_y = rng.standard_normal((50, 4)).astype(np.float32), np.zeros(50, dtype=np.int64)
    test_x[:10], test_y[:10] = x[40:50], y[40:50]  # 10 of 50 test samples copied from train
    np.savez(tmp_path / "leaky.npz", x_train=x, y_train=y, x_test=test_x, y_test=test_y)
    result, report = run_preflight(cli, write_config(tmp_path, data={"dataset": "npz", "path": "leaky.npz",
                                                                     "val_split": 0.0}, replace=True))
    assert result.exit_code == 1
    check = checks_of(report)["train/val/test duplicates"]
    leaked = check["values"]["test_in_train"]
    assert check["status"] == "fail" and leaked["count"] == 10 and leaked["of"] == 50
    assert "test: 10 of 50 (20.0%) also in train" in check["detail"]
    train_x = prepare(load_config(tmp_path / "tiny.yaml"), torch.device("cpu")).data.splits["train"][0]
    for test_index, train_index in leaked["examples"]:  # each names a copied row and where it sits in train
        assert torch.equal(torch.from_numpy(test_x[test_index]), train_x[train_index])
    assert list(check["values"]) == ["test_in_train"]  # no val split here


def test_cheap_checks_find_messy_data_a_loud_init_and_a_schedule_longer_than_the_run(tmp_path, importable):
    cfg = load_config(write_config(tmp_path, data={"dataset": "badnets.data:messy", "batch_size": 50},
                                   model={"arch": "badnets.nets:Loud"},
                                   scheduler={"name": "cosine", "warmup_steps": 100, "min_lr": 0.5}, replace=True))
    prepared = prepare(cfg, torch.device("cpu"))
    weights = {name: value.clone() for name, value in prepared.learner.model.state_dict().items()}
    rng = torch.get_rng_state()
    checks = {check.name: check for check in run_cheap_checks(cfg, prepared.data, prepared.learner)}
    assert torch.equal(torch.get_rng_state(), rng)  # fit's random stream is untouched
    assert all(torch.equal(value, weights[name]) for name, value in prepared.learner.model.state_dict().items())
    assert list(checks) == ["non-finite values", "labels in range", "class balance", "train/val/test duplicates",
                            "constant features", "loss at init", "schedule"]
    assert checks["non-finite values"].status == "fail" and checks["non-finite values"].values == {
        "val/inputs": {"samples": 1, "examples": [5]}}
    assert checks["class balance"].status == "warn" and "20.0x" in checks["class balance"].detail
    assert checks["constant features"].status == "warn" and checks["constant features"].values["constant"] == [2]
    leaked = checks["train/val/test duplicates"]
    assert leaked.status == "fail" and leaked.values["val_in_train"]["count"] == 19  # the NaN one differs
    assert checks["loss at init"].status == "warn" and checks["loss at init"].fix
    schedule = checks["schedule"]
    assert schedule.status == "warn" and "never reaches" in schedule.detail and "rises" in schedule.detail
    assert schedule.values["steps"] == 3 * 5  # 3 epochs of 210 samples in batches of 50
    assert all(check.fix for check in checks.values() if check.status != "pass")


def test_plateau_patience_longer_than_the_run_warns(tmp_path):
    cfg = load_config(write_config(tmp_path, scheduler={"name": "plateau", "patience": 5}))
    data = prepare(cfg, torch.device("cpu")).data
    check = schedule_sanity(cfg, data.size("train"))
    assert check.status == "warn" and "plateau patience 5" in check.detail and "3 validations" in check.detail
    longer = load_config(write_config(tmp_path, train={"epochs": 7}),
                         ["scheduler.name=plateau", "scheduler.patience=5"])
    assert schedule_sanity(longer, data.size("train")).status == "pass"


def test_labels_out_of_range_fail():
    spec = DataSpec((2,), 3, ("a", "b", "c"))
    data = DataSplits(spec, {"train": (torch.zeros(4, 2), torch.tensor([0, 1, 2, 1])),
                               "test": (torch.zeros(3, 2), torch.tensor([0, 5, -1]))})
    check = labels_in_range(data)
    assert check.status == "fail" and check.values == {"test": {"samples": 2, "examples": [1, 2]}}
    assert "5 at index 1" in check.detail and "-1 at index 2" in check.detail


@pytest.mark.parametrize("lr, side", [(1e-6, "below"), (30.0, "above")])
def test_an_lr_far_from_the_range_tests_suggestion_warns(tmp_path, lr, side):
    cfg = load_config(write_config(tmp_path), [f"optimizer.lr={lr}"])
    prepared = prepare(cfg, torch.device("cpu"))
    check = learning_rate(cfg, prepared.data, torch.device("cpu"), None, prepared.learner)
    assert check.status == "warn" and side in check.detail and "--set optimizer.lr=" in check.fix
    assert check.values["suggested_lr"] is not None


def test_batch_norm_is_checked_in_eval_mode_and_skipped_when_it_always_mixes(tmp_path, importable):
    cfg = load_config(write_config(tmp_path, model={"arch": "mlp", "hidden": [16], "norm": "batch"}, replace=True))
    prepared = prepare(cfg, torch.device("cpu"))
    assert batch_independence(prepared.learner, prepared.data).status == "pass"
    assert prepared.learner.model.training  # the mode is given back
    cfg = load_config(write_config(tmp_path, model={"arch": "badnets.nets:BatchStatistics"}, replace=True))
    prepared = prepare(cfg, torch.device("cpu"))
    check = batch_independence(prepared.learner, prepared.data)
    assert check.status == "skip" and "by design" in check.detail


def test_token_windows_are_checked_by_substitution_and_shown_decoded(tmp_path):
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat; the dog sat on the log. " * 20)
    cfg = load_config(write_config(tmp_path, data={"dataset": "text", "path": "corpus.txt", "block_size": 8,
                                                   "windows": 64, "batch_size": 8},
                                   model={"arch": "gpt", "d_model": 16, "heads": 2, "layers": 1}, replace=True))
    prepared = prepare(cfg, torch.device("cpu"))
    independence = batch_independence(prepared.learner, prepared.data)
    assert independence.status == "pass" and "replacing" in independence.detail
    look = look_at_batch(cfg, prepared.data, None)
    windows = [row[1] for row in look.values["table"]["rows"]]
    assert look.status == "pass" and all(window.strip("'") in "the cat sat on the mat; the dog sat on the log. " * 3
                                         for window in windows)


def test_a_bad_config_exits_2_with_one_line(cli, tmp_path):
    result = cli("preflight", write_config(tmp_path), "--set", "model.hiden=[3]")
    assert result.exit_code == 2 and "model.hiden" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_fit_has_a_preflight_key_on_by_default(cli, tmp_path):
    config = write_config(tmp_path)
    assert load_config(config).train.preflight is True
    assert load_config(config, ["train.preflight=false"]).train.preflight is False
    result = cli("config", config)
    assert result.exit_code == 0 and "preflight: true" in result.stdout
