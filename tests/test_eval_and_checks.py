import json
import os
import pickle
import subprocess

import pytest
import torch
import yaml

from conftest import MLTRAIN, only_run, write_config
from mltrain.checkpoint import load_checkpoint, save_checkpoint
from mltrain.errors import TrainingFailed


def make_run(cli, tmp_path, **sections):
    result = cli("fit", write_config(tmp_path, **sections))
    assert result.exit_code == 0, result.output
    return only_run(tmp_path)


def test_eval_in_a_fresh_process_matches_the_fit(cli, tmp_path):
    run = make_run(cli, tmp_path)
    result = subprocess.run([MLTRAIN, "eval", str(run), "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    summary = json.loads((run / "summary.json").read_text())
    assert report["split"] == "test" and report["epoch"] == summary["best"]["epoch"]
    assert report["metrics"]["test/accuracy"] == summary["test"]["test/accuracy"]
    assert sum(map(sum, report["confusion_matrix"])) == report["samples"]
    assert set(report["per_class"]) == {"precision", "recall", "f1", "support"}
    written = json.loads((run / "eval-test.json").read_text())
    assert written == report


def test_eval_val_split_and_human_output(cli, tmp_path):
    run = make_run(cli, tmp_path)
    result = cli("eval", run / "checkpoints/last.pt", "--split", "val")
    assert result.exit_code == 0, result.output
    assert "val/accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert (run / "eval-val.json").is_file()


def test_eval_set_takes_only_data_keys(cli, tmp_path):
    run = make_run(cli, tmp_path)
    result = cli("eval", run, "--set", "model.hidden=[3]")
    assert result.exit_code == 2 and "data.*" in result.stderr
    assert cli("eval", run, "--set", "data.batch_size=7", "--json").exit_code == 0


def test_eval_missing_split_is_a_user_error(cli, tmp_path):
    run = make_run(cli, tmp_path, data={"val_split": 0.0})
    result = cli("eval", run, "--split", "val")
    assert result.exit_code == 2 and "no val split" in result.stderr


def test_eval_bad_paths_and_files_exit_2(cli, tmp_path):
    assert "no such file" in cli("eval", tmp_path / "nothing").stderr
    assert "no checkpoints/best.pt" in cli("eval", tmp_path).stderr
    cases = {"empty.pt": b"", "garbage.pt": b"not a checkpoint at all", }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        result = cli("eval", tmp_path / name)
        assert result.exit_code == 2 and name in result.stderr and "Traceback" not in result.output
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    result = cli("eval", tmp_path / "foreign.pt")
    assert result.exit_code == 2 and "not an mltrain checkpoint" in result.stderr


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = ""


def test_a_checkpoint_that_would_run_code_is_refused(cli, tmp_path):
    global MARKER
    MARKER = str(tmp_path / "payload-ran")
    with open(tmp_path / "evil.pt", "wb") as file:
        pickle.dump({"format": "mltrain-checkpoint", "x": RunsCode()}, file)
    torch.save({"format": "mltrain-checkpoint", "x": RunsCode()}, tmp_path / "evil_zip.pt")
    for name in ("evil.pt", "evil_zip.pt"):
        result = cli("eval", tmp_path / name)
        assert result.exit_code == 2, result.output
        assert not (tmp_path / "payload-ran").exists()


def test_newer_checkpoint_format_is_refused(tmp_path):
    save_checkpoint({"model": {}}, tmp_path / "new.pt")
    checkpoint = torch.load(tmp_path / "new.pt", weights_only=True)
    checkpoint["format_version"] = 99
    torch.save(checkpoint, tmp_path / "new.pt")
    result = subprocess.run([MLTRAIN, "eval", str(tmp_path / "new.pt")], capture_output=True, text=True)
    assert result.returncode == 2 and "newer" in result.stderr


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)

    def crash(*args, **kwargs):
        args[1].write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(TrainingFailed, match="No space left on device; the previous one is intact"):
        save_checkpoint({"model": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    checkpoint, _ = load_checkpoint(path)
    assert torch.equal(checkpoint["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_overfit_tiny_passes_on_a_sane_config(cli, tmp_path):
    config = write_config(tmp_path, optimizer={"lr": 0.01}, model={"dropout": 0.5})
    result = cli("overfit-tiny", config, "--samples", "16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["samples"] == 16
    assert report["final_loss"] < 0.01 * report["initial_loss"] and report["final_accuracy"] == 1.0
    names = [check["name"] for check in report["checks"]]
    assert "gradients reach every weight" in names and "loss at init" in names
    init = next(check for check in report["checks"] if check["name"] == "loss at init")
    assert abs(report["initial_loss"] - report["expected_initial_loss"]) < 0.5 and init["status"] == "pass"


def test_overfit_tiny_fails_with_exit_1_when_the_model_cannot_fit(cli, tmp_path):
    config = write_config(tmp_path, optimizer={"lr": 1e-7})
    result = cli("overfit-tiny", config, "--steps", "50")
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "optimizer.lr" in result.stdout


def test_overfit_tiny_reports_weights_without_gradient(tmp_path, monkeypatch):
    from mltrain.checks.overfit_tiny import overfit_tiny
    from mltrain.config import load_config
    from mltrain.models import mlp

    original = mlp.MLP.__init__

    def with_unused_weight(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.unused = torch.nn.Parameter(torch.zeros(3))  # never used in forward()

    monkeypatch.setattr(mlp.MLP, "__init__", with_unused_weight)
    report = overfit_tiny(load_config(write_config(tmp_path)), samples=8, steps=50)
    gradient_check = next(c for c in report["checks"] if c["name"] == "gradients reach every weight")
    assert not report["passed"] and gradient_check["status"] == "fail" and "unused" in gradient_check["detail"]


def test_a_truncated_checkpoint_is_reported(cli, tmp_path):
    run = make_run(cli, tmp_path)
    whole = (run / "checkpoints/last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    result = cli("eval", tmp_path / "cut.pt")
    assert result.exit_code == 2 and "cut.pt" in result.stderr and "Traceback" not in result.output


def test_a_full_disk_during_fit_keeps_the_last_checkpoint_and_says_so(cli, tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def fills_up(obj, file, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # epoch 1 writes best.pt and last.pt; then the disk is full
            raise OSError(28, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_up)
    result = cli("fit", write_config(tmp_path, data={"val_split": 0.0}, train={"monitor": "train/loss"}))
    monkeypatch.undo()
    assert result.exit_code == 1
    assert "could not write checkpoint" in result.stderr and "previous one is intact" in result.stderr
    run = only_run(tmp_path)
    assert load_checkpoint(run / "checkpoints/last.pt")[0]["epoch"] == 1
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_overfit_tiny_on_a_diverging_lr_gives_valid_json_and_suggests_a_smaller_lr(cli, tmp_path):
    config = write_config(tmp_path, optimizer={"name": "sgd", "lr": 1e12})
    result = cli("overfit-tiny", config, "--steps", "30", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)  # NaN would not be valid JSON: it is null
    assert report["final_loss"] is None and "smaller optimizer.lr" in report["hint"]


def test_the_set_example_in_eval_help_is_one_eval_takes(cli, tmp_path, monkeypatch):
    help_text = " ".join(cli("eval", "--help").stdout.split())
    assert "--set data.path=new.csv" in help_text and "optimizer." not in help_text and "model." not in help_text
    rows = torch.randn(160, 2).tolist()
    lines = ["a,b,label"] + [f"{a:.4f},{b:.4f},{int(a > b)}" for a, b in rows]
    (tmp_path / "train.csv").write_text("\n".join(lines[:121]) + "\n")
    (tmp_path / "new.csv").write_text("\n".join(lines[:1] + lines[121:]) + "\n")
    config = tmp_path / "table.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": "csv", "path": "train.csv", "target": "label"},
                                      "train": {"epochs": 1}, "output": {"dir": str(tmp_path / "runs")}}))
    assert cli("fit", config).exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = cli("eval", only_run(tmp_path), "--set", "data.path=new.csv", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 8  # the 20 % test hold-out of the new file's 40 rows


def test_overfit_tiny_hint_for_a_regression_mentions_the_target_scale(cli, tmp_path):
    config = write_config(tmp_path, model={"arch": "mlp", "hidden": [8], "head": "linear"})
    config.write_text(config.read_text().replace("dataset: spirals", "dataset: adding").replace("points: 100",
                                                                                               "samples: 200"))
    result = cli("overfit-tiny", config, "--steps", "2", "--json")
    assert result.exit_code == 1, result.output
    assert "targets' scale" in json.loads(result.stdout)["hint"]
