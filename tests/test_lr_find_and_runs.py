import errno
import json

import pytest

from conftest import write_config
from mltrain.checks.lr_find import smoothed, suggest


def test_lr_find_reports_a_curve_a_plot_and_a_suggestion(cli, tmp_path):
    result = cli("lr-find", write_config(tmp_path), "--steps", "100", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    lrs = report["lrs"]
    assert lrs[0] == 1e-7 and all(b > a for a, b in zip(lrs, lrs[1:])) and len(report["losses"]) == len(lrs)
    assert lrs[0] < report["suggested_lr"] < lrs[-1]
    assert report["losses"][lrs.index(report["suggested_lr"])] < report["losses"][0]  # where the loss falls
    assert (tmp_path / "runs" / "tiny-lr-find.png").is_file()


def test_lr_find_stops_when_the_loss_diverges(cli, tmp_path):
    result = cli("lr-find", write_config(tmp_path, optimizer={"name": "sgd"}), "--steps", "200",
                 "--start-lr", "1", "--end-lr", "1e9", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] < 200


def test_lr_find_refuses_a_backwards_range(cli, tmp_path):
    result = cli("lr-find", write_config(tmp_path), "--start-lr", "1", "--end-lr", "0.1")
    assert result.exit_code == 2 and "start < end" in result.stderr


def test_lr_find_refuses_an_output_dir_it_cannot_write_before_the_test(cli, tmp_path, monkeypatch):
    tests = []
    monkeypatch.setattr("mltrain.checks.lr_find.lr_find", lambda *args, **kwargs: tests.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli("lr-find", write_config(tmp_path, output={"dir": str(blocker / "runs")}), "--steps", "100")
    assert result.exit_code == 2 and f"cannot write the plot into output.dir {blocker / 'runs'}" in result.stderr
    assert not tests  # refused before the range test ran


def test_lr_find_says_when_the_plot_cannot_be_written(cli, tmp_path, monkeypatch):
    def full_disk(figure, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("mltrain.plots._save", full_disk)
    result = cli("lr-find", write_config(tmp_path), "--steps", "20")
    assert result.exit_code == 2
    assert "cannot write the plot into output.dir" in result.stderr and "No space left on device" in result.stderr


def test_suggestion_is_the_steepest_fall_before_the_minimum():
    lrs = [10.0 ** e for e in range(-6, 1)]
    curve = [2.0, 1.99, 1.9, 1.0, 0.9, 0.95, 3.0]  # steepest between 1e-4 and 1e-3
    assert suggest(lrs, curve) == 1e-4
    assert suggest(lrs, [2.0] * 7) is None
    assert suggest(lrs, [2.31, 2.32, 2.30, 2.31, 2.305, 2.4, 3.0]) is None  # flat: its dips are noise
    assert smoothed([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # bias-corrected: no pull towards 0


def test_runs_lists_each_run_with_its_status(cli, tmp_path):
    assert cli("fit", write_config(tmp_path)).exit_code == 0
    (tmp_path / "runs" / "not-a-run").mkdir()
    result = cli("runs", tmp_path / "runs", "--json")
    (row,) = json.loads(result.stdout)["runs"]
    assert row["status"] == "completed" and row["epochs"] == 3 and "test/accuracy" in row["test"]
    assert "completed" in cli("runs", tmp_path / "runs").stdout


def test_runs_on_a_missing_or_empty_directory(cli, tmp_path):
    assert cli("runs", tmp_path / "nothing").exit_code == 2
    result = cli("runs", tmp_path)
    assert result.exit_code == 0 and "no runs" in result.stdout
