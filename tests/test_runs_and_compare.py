"""`mltrain runs` (differing hyperparameters, sort, filter, broken summaries), `mltrain compare`
and the run plots."""

import json
import shutil
from pathlib import Path

import matplotlib.figure
import pytest
from typer.testing import CliRunner

from conftest import read_jsonl, write_config
from mltrain.cli import app
from mltrain.plots import plot_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished runs of one config: as written, with a smaller lr, with a smaller model."""
    directory = tmp_path_factory.mktemp("runs")
    config = write_config(directory, train={"epochs": 3, "log_every_steps": 2, "monitor": "val/accuracy"})
    runner = CliRunner()
    for overrides in ([], ["--set", "optimizer.lr=1e-3"], ["--set", "model.hidden=[16]"]):
        result = runner.invoke(app, ["fit", str(config), "--quiet", *overrides])
        assert result.exit_code == 0, result.output
    return sorted((directory / "runs").iterdir())


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def listed(cli, directory, *args):
    result = cli("runs", directory, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_runs_shows_the_hyperparameters_that_differ(cli, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # room for both
    report = listed(cli, runs[0].parent)
    assert report["differing"] == ["model.hidden", "optimizer.lr"]
    assert [row["hyperparameters"] for row in report["runs"]] == [
        {"model.hidden": [32, 32], "optimizer.lr": 0.01},
        {"model.hidden": [32, 32], "optimizer.lr": 0.001},
        {"model.hidden": [16], "optimizer.lr": 0.01}]
    for row, run in zip(report["runs"], runs):
        assert row["best"] == summary(run)["best"] and row["test"] == summary(run)["test"]
    table = cli("runs", runs[0].parent).stdout
    assert "model.hidden" in table and "optimizer.lr" in table and "0.001" in table and "[16]" in table
    assert "seed" not in table  # the same in every run


def test_runs_sorts_by_a_metric_best_first_or_by_a_config_key(cli, runs):
    by_loss = listed(cli, runs[0].parent, "--sort", "test/loss")["runs"]
    losses = [row["test"]["test/loss"] for row in by_loss]
    assert losses == sorted(losses)
    by_accuracy = listed(cli, runs[0].parent, "--sort", "val/accuracy")["runs"]
    best = [row["best"]["value"] for row in by_accuracy]  # val/accuracy is the monitored metric
    assert best == sorted(best, reverse=True)
    by_lr = listed(cli, runs[0].parent, "--sort", "optimizer.lr")["runs"]
    assert [row["hyperparameters"]["optimizer.lr"] for row in by_lr][0] == 0.001


def test_runs_filters_on_config_keys_and_status(cli, runs):
    (row,) = listed(cli, runs[0].parent, "--filter", "optimizer.lr=1e-3")["runs"]
    assert row["run"] == runs[1].name
    (row,) = listed(cli, runs[0].parent, "--filter", "model.hidden=[16]")["runs"]
    assert row["run"] == runs[2].name
    report = listed(cli, runs[0].parent, "--filter", "optimizer.lr=0.01", "--filter", "model.hidden=[32, 32]")
    assert [row["run"] for row in report["runs"]] == [runs[0].name] and report["differing"] == []
    assert len(listed(cli, runs[0].parent, "--filter", "status=completed")["runs"]) == 3
    assert listed(cli, runs[0].parent, "--filter", "status=failed")["runs"] == []


@pytest.mark.parametrize("args, message", [
    (["--filter", "optimizer.rl=0.01"], "--filter optimizer.rl: no run has this key; did you mean 'optimizer.lr'?"),
    (["--filter", "optimizer.lr"], "--filter optimizer.lr: expected KEY=VALUE"),
    (["--sort", "val/acuracy"], "--sort val/acuracy: no run has this metric or config key; "
                                "did you mean 'val/accuracy'?"),
])
def test_runs_refuses_unknown_keys_with_a_suggestion(cli, runs, args, message):
    result = cli("runs", runs[0].parent, *args)
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_runs_skips_a_run_with_a_broken_summary_with_one_warning(cli, runs, tmp_path):
    for run in runs:
        shutil.copytree(run, tmp_path / run.name)
    broken = {"list": b"[1, 2]", "null": b"null", "latin1": "{\"status\": \"d\xe9j\xe0\"}".encode("latin-1"),
              "cut": b'{"status": "comp'}
    for name, content in broken.items():
        shutil.copytree(runs[0], tmp_path / f"broken-{name}")
        (tmp_path / f"broken-{name}" / "summary.json").write_bytes(content)
    shutil.copytree(runs[0], tmp_path / "just-started")
    (tmp_path / "just-started" / "summary.json").unlink()

    result = cli("runs", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    rows = {row["run"]: row for row in json.loads(result.stdout)["runs"]}
    assert set(rows) == {run.name for run in runs} | {"just-started"}
    assert rows["just-started"]["status"] == "unknown"
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 4 and all(line.startswith("warning: ") and line.endswith("; run skipped")
                                      for line in warnings)
    assert {name for name in broken if any(f"broken-{name}" in line for line in warnings)} == set(broken)
    assert cli("runs", tmp_path).exit_code == 0


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved while a test runs, by file name (they are still written)."""
    figures = {}
    save = matplotlib.figure.Figure.savefig

    def record(figure, path, *args, **kwargs):
        figures[Path(path).name] = figure
        return save(figure, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    return figures


def test_compare_overlays_the_runs_and_prints_what_differs(cli, runs, tmp_path, drawn):
    output = tmp_path / "plots" / "val-loss.png"
    result = cli("compare", runs[0], runs[1], runs[2], "--metric", "val/loss", "--output", output)
    assert result.exit_code == 0, result.output
    assert output.is_file() and str(output) in result.stdout
    assert "model.hidden" in result.stdout and "optimizer.lr" in result.stdout and "0.001" in result.stdout
    (axes,) = drawn["val-loss.png"].axes
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert set(lines) == {run.name for run in runs}
    for run in runs:
        points = {record["step"]: record["val/loss"] for record in read_jsonl(run / "metrics.jsonl")
                  if "val/loss" in record}
        assert list(lines[run.name].get_xdata()) == sorted(points)
        assert list(lines[run.name].get_ydata()) == pytest.approx([points[step] for step in sorted(points)])


def test_compare_defaults_to_the_monitored_metric_in_the_working_directory(cli, runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("compare", runs[0], runs[1])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "compare-val-accuracy.png").is_file()
    assert "optimizer.lr" in result.stdout and "model.hidden" not in result.stdout


@pytest.mark.parametrize("which, message", [
    ("one", "compare needs at least two run directories"),
    ("not-a-run", "not a run directory (no metrics.jsonl)"),
    ("metric", "--metric val/acc: no run logged it; did you mean 'val/accuracy'?"),
])
def test_compare_refuses_bad_input_with_one_line(cli, runs, tmp_path, which, message):
    args = {"one": [runs[0]], "not-a-run": [runs[0], tmp_path],
            "metric": [runs[0], runs[1], "--metric", "val/acc"]}[which]
    result = cli("compare", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_plots_have_titles_the_best_epoch_integer_epochs_and_lr_by_step(runs, drawn):
    run = runs[0]
    written = plot_run(run)
    assert {path.name for path in written} == {"loss.png", "accuracy.png", "lr.png"}
    best = summary(run)["best"]
    for name in ("loss", "accuracy"):
        (axes,) = drawn[f"{name}.png"].axes
        assert axes.get_title() == f"{name} by epoch ({run.name})"
        assert all(float(tick).is_integer() for tick in axes.get_xticks())
        assert any(list(line.get_xdata()) == [best["epoch"], best["epoch"]] for line in axes.get_lines())
    (axes,) = drawn["accuracy.png"].axes
    (star,) = [line for line in axes.get_lines() if line.get_marker() == "*"]
    assert list(star.get_xdata()) == [best["epoch"]] and list(star.get_ydata()) == [best["value"]]
    (axes,) = drawn["lr.png"].axes
    (line,) = axes.get_lines()
    logged = {record["step"]: record["lr"] for record in read_jsonl(run / "metrics.jsonl")}
    assert list(line.get_xdata()) == list(logged) and len(logged) > 3  # every logged step, not one per epoch
    assert axes.get_xlabel() == "step"
