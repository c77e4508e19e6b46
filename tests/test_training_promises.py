"""What the config promises about training, checked in real runs: heads, weight decay, label
smoothing, the schedules' lr and rmsprop."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

import mltrain
from conftest import only_run, read_jsonl, write_config


def val_logits(run_dir):
    """The val split's labels and the logits of last.pt's weights on it, through mltrain's one rebuild path."""
    from mltrain.restore import restore

    restored = restore(run_dir / "checkpoints" / "last.pt", device="cpu")
    x, y = restored.data().splits["val"]
    with torch.no_grad():
        return restored.model.eval()(x), y


def epoch_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "val/loss" in r]


def step_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "grad_norm" in r]


def test_the_sigmoid_head_trains_and_is_scored_with_binary_cross_entropy(tmp_path):
    config = write_config(tmp_path, model={"hidden": [32, 32], "head": "sigmoid"},
                          optimizer={"name": "adam", "lr": 0.03}, train={"epochs": 4})
    result = mltrain.fit(config)
    records = epoch_records(result.run_dir)
    assert records[-1]["val/loss"] < records[0]["val/loss"] < math.log(2) + 0.05
    logits, y = val_logits(result.run_dir)
    assert logits.shape == (len(y), 3)  # one-vs-rest: one logit per class
    assert records[-1]["val/loss"] == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, F.one_hot(y, 3).float()).item(), rel=1e-5)
    assert records[-1]["val/accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_a_binary_sigmoid_head_has_one_logit_and_predicts_its_sign(tmp_path):
    config = write_config(tmp_path, data={"classes": 2}, model={"hidden": [32, 32], "head": "sigmoid"},
                          optimizer={"name": "adam", "lr": 0.03}, train={"epochs": 4})
    records = epoch_records(mltrain.fit(config).run_dir)
    logits, y = val_logits(only_run(tmp_path))
    assert logits.shape == (len(y), 1)
    assert records[-1]["val/loss"] == pytest.approx(
        F.binary_cross_entropy_with_logits(logits[:, 0], y.float()).item(), rel=1e-5)
    assert records[-1]["val/accuracy"] == pytest.approx(((logits[:, 0] > 0).long() == y).float().mean().item())
    assert records[-1]["val/accuracy"] > 0.6


def test_regression_learns_standardised_targets_and_reports_in_their_units(tmp_path):
    config = tmp_path / "adding.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "adding", "samples": 400, "length": 8, "batch_size": 32},
        "model": {"arch": "gru", "hidden_size": 16, "head": "linear"}, "optimizer": {"lr": 0.01},
        "train": {"epochs": 2}, "output": {"dir": str(tmp_path / "runs")}}))
    run = mltrain.fit(config).run_dir
    last = epoch_records(run)[-1]
    scale = torch.load(run / "checkpoints/last.pt", weights_only=True)["data_state"]["target_scale"]
    mean, std = scale["mean"][0], scale["std"][0]
    assert 0.5 < mean < 1.5 and std > 0.1  # the sum of two values in [0, 1]
    logits, y = val_logits(run)
    predicted = logits[:, 0] * std + mean
    assert last["val/mse"] == pytest.approx(((predicted - y) ** 2).mean().item(), rel=1e-4)
    assert last["val/loss"] == pytest.approx(last["val/mse"] / std ** 2, rel=1e-4)  # the loss: standardised
    from mltrain.restore import restore

    restored = restore(run / "checkpoints/last.pt", device="cpu")  # predicting zero, the standardised mean:
    assert restored.learner.criterion.initial_loss(restored.data().splits["train"][1]) == pytest.approx(1.0, rel=0.01)


def test_label_smoothing_from_the_config_is_in_the_loss(tmp_path):
    config = write_config(tmp_path, train={"epochs": 1, "label_smoothing": 0.3})
    result = mltrain.fit(config)
    logits, y = val_logits(result.run_dir)
    recorded = epoch_records(result.run_dir)[-1]["val/loss"]
    assert recorded == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.3).item(), rel=1e-5)
    assert recorded != pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-3)


def test_weight_decay_is_on_weight_matrices_only(tmp_path):
    config = write_config(tmp_path, model={"hidden": [32, 32], "norm": "layer"},
                          optimizer={"name": "adam", "lr": 0.01, "weight_decay": 0.1}, train={"epochs": 1})
    result = mltrain.fit(config)
    state = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    model_shapes = sorted(tuple(t.shape) for t in state["model"].values())
    groups = state["optimizer"]["param_groups"]
    shapes = {group["weight_decay"]: [tuple(state["optimizer"]["state"][i]["exp_avg"].shape) for i in group["params"]]
              for group in groups}
    assert set(shapes) == {0.1, 0.0}
    assert shapes[0.1] == [(32, 2), (32, 32), (3, 32)]  # the three Linear weights
    assert all(len(shape) == 1 for shape in shapes[0.0]) and len(shapes[0.0]) == 7  # biases and norm scales
    assert sorted(shapes[0.1] + shapes[0.0]) == model_shapes  # every parameter in exactly one group


@pytest.mark.parametrize("scheduler, expected", [
    ({"name": "step", "step_size": 5, "gamma": 0.5}, lambda s: 0.01 * 0.5 ** (s // 5)),
    ({"name": "multistep", "milestones": [3, 8], "gamma": 0.1}, lambda s: 0.01 * 0.1 ** ((s >= 3) + (s >= 8))),
    ({"name": "exponential", "decay": 0.9}, lambda s: 0.01 * 0.9 ** s),
])
def test_step_schedules_record_the_lr_of_their_formula(tmp_path, scheduler, expected):
    config = write_config(tmp_path, scheduler=scheduler, train={"epochs": 2, "log_every_steps": 1})
    records = step_records(mltrain.fit(config).run_dir)
    assert [r["step"] for r in records] == list(range(1, 15))
    for record in records:  # the lr in force after the record's step
        assert record["lr"] == pytest.approx(expected(record["step"]), rel=1e-6), record


def test_onecycle_rises_to_lr_then_anneals_and_leaves_the_momentum_alone(tmp_path):
    config = write_config(tmp_path, scheduler={"name": "onecycle"}, train={"epochs": 2, "log_every_steps": 1})
    run = mltrain.fit(config).run_dir
    lrs = [r["lr"] for r in step_records(run)]
    total = 14 + 1  # the run's 14 steps and one more, so that the last step stays on the curve
    peak = 0.3 * total - 1  # the step at which the rise ends (torch's OneCycleLR phases), pct_start 0.3

    def lr_after(step):
        if step <= peak:
            start, end, t = 0.01 / 25, 0.01, step / peak
        else:
            start, end, t = 0.01, 0.01 / 25 / 1e4, (step - peak) / (total - 1 - peak)
        return end + (start - end) * (1 + math.cos(math.pi * t)) / 2

    assert lrs == pytest.approx([lr_after(step) for step in range(1, 15)], rel=1e-6)
    assert max(lrs) == pytest.approx(0.01, rel=0.05) and lrs[-1] < 0.01 / 1000
    groups = torch.load(run / "checkpoints/last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert all(tuple(group["betas"]) == (0.9, 0.999) for group in groups)  # no momentum cycling


def test_plateau_drops_the_lr_after_validations_without_improvement(tmp_path):
    config = write_config(tmp_path, scheduler={"name": "plateau", "gamma": 0.5, "patience": 0},
                          optimizer={"name": "sgd", "lr": 0.5},
                          train={"epochs": 8, "monitor": "val/accuracy"})
    records = epoch_records(mltrain.fit(config).run_dir)
    lr, best, expected = 0.5, -math.inf, []
    for record in records:  # the record's lr is the one its epoch trained at
        expected.append(lr)
        if record["val/accuracy"] > best * (1 + 1e-4):  # torch's default threshold, relative
            best = record["val/accuracy"]
        else:
            lr *= 0.5
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert min(expected) < 0.5  # the case exercises at least one drop


def test_rmsprop_trains_with_its_momentum(tmp_path):
    config = write_config(tmp_path, optimizer={"name": "rmsprop", "lr": 0.003, "momentum": 0.5},
                          train={"epochs": 3})
    result = mltrain.fit(config)
    records = epoch_records(result.run_dir)
    assert records[-1]["val/loss"] < records[0]["val/loss"]
    assert {r["lr"] for r in records} == {0.003}
    optimizer = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert optimizer["param_groups"][0]["momentum"] == 0.5
    assert {"square_avg", "momentum_buffer"} <= set(optimizer["state"][0])


def test_plateau_state_survives_a_resume_through_the_python_api(tmp_path):
    settings = dict(scheduler={"name": "plateau", "gamma": 0.5, "patience": 0},
                    optimizer={"name": "sgd", "lr": 0.1}, train={"epochs": 8, "monitor": "val/accuracy"})
    whole = epoch_records(mltrain.fit(write_config(tmp_path, name="whole", **settings)).run_dir)
    half = mltrain.fit(write_config(tmp_path, name="half", **settings), overrides=["train.epochs=4"])
    resumed = mltrain.resume(half.run_dir, ["train.epochs=8"])
    assert resumed.run_dir == half.run_dir and resumed.summary["epochs_completed"] == 8
    records = epoch_records(half.run_dir)
    assert [r["lr"] for r in records] == [r["lr"] for r in whole]
    assert [r["val/accuracy"] for r in records] == [r["val/accuracy"] for r in whole]
    lrs = [r["lr"] for r in whole]
    assert lrs[4] < lrs[0] and len(set(lrs[4:])) > 1  # drops before and after the resume point
