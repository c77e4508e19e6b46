import json
import math

import pytest
import torch

import mltrain
from conftest import REPO, only_run, read_jsonl, write_config


def test_fit_writes_the_run_directory(cli, tmp_path, tiny_config):
    result = cli("fit", tiny_config)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    assert run.name.startswith("tiny-")
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "train.log",
                 "checkpoints/last.pt", "checkpoints/best.pt", "plots/loss.png", "plots/accuracy.png"):
        assert (run / name).is_file(), name

    records = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"epoch", "step", "train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= set(records[0])
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("epoch,step,train/loss")

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["epochs_completed"] == 3 and summary["steps"] == records[-1]["step"]
    assert summary["best"]["metric"] == "val/loss"
    assert summary["best"]["value"] == min(r["val/loss"] for r in records)
    assert summary["params"] > 0 and summary["device"] == "cpu" and summary["train_samples_per_s"] > 0
    assert set(summary["versions"]) == {"mltrain", "torch", "python"}
    assert "test/accuracy" in summary["test"]

    saved = (run / "config.yaml").read_text()
    assert "monitor: val/loss" in saved and "hidden: [32, 32]" in saved
    log = (run / "train.log").read_text()
    assert "epoch 3/3" in log and "parameters" in log


def test_checkpoint_holds_everything_and_loads_safely(cli, tmp_path, tiny_config):
    assert cli("fit", tiny_config).exit_code == 0
    run = only_run(tmp_path)
    checkpoint = torch.load(run / "checkpoints/last.pt", weights_only=True)  # no arbitrary object to unpickle
    for key in ("model", "optimizer", "scheduler", "scaler", "epoch", "step", "config", "metrics", "rng"):
        assert key in checkpoint
    assert checkpoint["epoch"] == 3 and checkpoint["config"]["model"]["hidden"] == [32, 32]
    scored = cli("eval", run / "checkpoints/last.pt", "--split", "val", "--json")  # eval loads it the same way
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["metrics"]["val/loss"] == pytest.approx(checkpoint["metrics"]["val/loss"], rel=1e-5)


def test_loss_decreases_and_spirals_are_learned(tmp_path):
    config = write_config(tmp_path, data={"points": 300}, model={"hidden": [64, 64]}, train={"epochs": 30})
    result = mltrain.fit(config)
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    assert records[-1]["train/loss"] < records[0]["train/loss"] / 3
    best = [r for r in records if "val/loss" in r][result.summary["best"]["epoch"] - 1]  # best.pt's epoch
    assert best["val/loss"] == result.summary["best"]["value"] and best["val/accuracy"] > 0.9


def test_same_config_twice_gives_identical_metrics(tmp_path):
    config = write_config(tmp_path, model={"dropout": 0.1})
    first = mltrain.fit(config)
    second = mltrain.fit(config)
    assert first.run_dir != second.run_dir  # started in the same second: still two directories
    assert read_jsonl(first.run_dir / "metrics.jsonl") == read_jsonl(second.run_dir / "metrics.jsonl")
    weights = [torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"] for r in (first, second)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_different_seed_gives_different_weights(tmp_path):
    runs = [mltrain.fit(write_config(tmp_path, seed=seed, name=f"s{seed}", train={"epochs": 1})) for seed in (0, 1)]
    weights = [torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"] for r in runs]
    assert not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_run_dir_flag_is_used_exactly_and_refuses_another_run(cli, tmp_path, tiny_config):
    target = tmp_path / "exact"
    assert cli("fit", tiny_config, "--run-dir", target).exit_code == 0
    assert (target / "summary.json").is_file()
    result = cli("fit", tiny_config, "--run-dir", target)
    assert result.exit_code == 2 and "not empty" in result.stderr


def test_bad_data_leaves_no_run_directory_behind(cli, tmp_path):
    config = tmp_path / "text.yaml"
    config.write_text(f"data: {{dataset: text, path: missing.txt}}\nmodel: {{arch: gpt}}\n"
                      f"output: {{dir: {tmp_path / 'runs'}}}\n")
    result = cli("fit", config)
    assert result.exit_code == 2 and "missing.txt" in result.stderr
    assert not list((tmp_path / "runs").glob("*"))


def test_train_monitor_with_mid_epoch_validation(tmp_path):
    config = write_config(tmp_path, train={"monitor": "train/loss", "val_every_steps": 2, "epochs": 1})
    result = mltrain.fit(config)
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    # 7 steps in the epoch: validations at steps 2, 4, 6, then the epoch's own at 7
    assert [(r["epoch"], r["step"]) for r in records] == [(1, 2), (1, 4), (1, 6), (1, 7)]
    assert all("val/loss" in r for r in records)
    best = min(records, key=lambda r: r["train/loss"])
    assert result.summary["best"] == {"metric": "train/loss", "value": best["train/loss"], "epoch": 1,
                                      "step": best["step"]}
    assert torch.load(result.run_dir / "checkpoints" / "best.pt", weights_only=True)["step"] == best["step"]


def test_unwritable_output_is_reported_before_training(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = write_config(tmp_path, output={"dir": str(blocker / "runs")})
    result = cli("fit", config)
    assert result.exit_code == 2 and "cannot create run directory" in result.stderr


def test_non_finite_loss_stops_with_exit_1_and_no_bad_checkpoint(cli, tmp_path):
    # 27 steps an epoch (216 samples, batch 8); the lr jumps by 1e30 after step 27, so step 28's update
    # (its own loss still finite) blows the weights up and step 29's loss is the first non-finite one.
    # Nothing is checked on the host before the epoch ends (step 54): only the on-device guard
    # can name step 29.
    config = write_config(tmp_path, data={"batch_size": 8}, optimizer={"name": "sgd", "lr": 0.1},
                          scheduler={"name": "torch.optim.lr_scheduler:StepLR", "step_size": 27, "gamma": 1e30},
                          train={"epochs": 3, "log_every_steps": 1000})
    result = cli("fit", config)
    assert result.exit_code == 1
    assert "non-finite at step 29 " in result.stderr and "optimizer.lr=0.01" in result.stderr
    run = only_run(tmp_path)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [27]
    for name in ("last.pt", "best.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        assert state["step"] == 27, name
        assert all(torch.isfinite(t).all() for t in state["model"].values()), name


def test_early_stopping_stops_and_says_why(tmp_path):
    config = write_config(tmp_path, train={"epochs": 50, "monitor": "val/loss",
                                           "early_stopping": {"patience": 1, "min_delta": 10.0}})
    result = mltrain.fit(config)
    assert result.summary["epochs_completed"] == 2
    assert "early stopping" in result.summary["stopped_early"]


def test_cosine_schedule_with_warmup_reaches_min_lr(tmp_path):
    config = write_config(tmp_path, scheduler={"name": "cosine", "warmup_steps": 5, "min_lr": 1e-4})
    records = read_jsonl(mltrain.fit(config).run_dir / "metrics.jsonl")
    assert records[-1]["lr"] == pytest.approx(1e-4)


def test_bf16_trains_on_cpu_and_fp16_is_refused(cli, tmp_path):
    runs = {precision: mltrain.fit(write_config(tmp_path, name=precision, train={"precision": precision, "epochs": 2}))
            for precision in ("fp32", "bf16")}
    assert runs["bf16"].summary["status"] == "completed"
    assert "precision bf16" in (runs["bf16"].run_dir / "train.log").read_text()
    losses = {precision: [r["train/loss"] for r in read_jsonl(run.run_dir / "metrics.jsonl")]
              for precision, run in runs.items()}
    # the same seed and data: only bf16's rounding tells the two apart, and it learns all the same
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    weights = torch.load(runs["bf16"].run_dir / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(t.dtype == torch.float32 for t in weights.values())  # autocast: fp32 master weights
    result = cli("fit", write_config(tmp_path, name="half", train={"precision": "fp16"}))
    assert result.exit_code == 2 and "fp16 needs a CUDA GPU" in result.stderr


def test_quickstart_reaches_95_percent_test_accuracy(tmp_path):
    result = mltrain.fit(REPO / "configs/quickstart.yaml", overrides=[f"output.dir={tmp_path}"])
    assert result.summary["test"]["test/accuracy"] >= 0.95
    assert math.isfinite(result.summary["final"]["val/loss"])
