"""`mltrain runs` columns: --columns picks and orders them; by default the most-differing keys that
fit the width, and a line saying how many were left out. The runs are written, not trained:
`runs` reads only config.yaml and summary.json."""

import json

import pytest
import yaml

from mltrain.runs_table import most_differing

SUMMARY = {"status": "completed", "epochs_completed": 3, "best": {"metric": "val/accuracy", "value": 0.9, "epoch": 2},
           "test": {"test/accuracy": 0.88}, "duration_s": 1.5, "params": 1234}


def write_runs(directory, configs):
    """Run directories r0, r1, ... each with its config and a completed run's summary."""
    for i, config in enumerate(configs):
        run = directory / f"r{i}"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        (run / "summary.json").write_text(json.dumps(SUMMARY))
    return directory


@pytest.fixture
def three_runs(tmp_path):
    return write_runs(tmp_path, [{"seed": 0, "model": {"arch": arch, "hidden": hidden}, "optimizer": {"lr": lr}}
                                 for arch, hidden, lr in (("mlp", 32, 0.01), ("mlp", 16, 0.001), ("cnn", 8, 0.1))])


@pytest.fixture
def sweep_runs(tmp_path):
    """Four runs differing in 13 keys of one width: sweep.k00 to k09 take two values, k10 to k12 four."""
    return write_runs(tmp_path, [{"sweep": {f"k{k:02d}": f"v{run % 2 if k < 10 else run}" for k in range(13)}}
                                 for run in range(4)])


def header(output: str) -> list[str]:
    (line,) = [line for line in output.splitlines() if line.startswith("┃")]
    return [name.strip() for name in line.strip("┃").split("┃")]


def test_columns_picks_the_columns_in_the_order_given(cli, three_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = cli("runs", three_runs, "--columns", "optimizer.lr,model.arch", "--columns", "seed")
    assert result.exit_code == 0, result.output
    assert header(result.stdout) == ["run", "status", "optimizer.lr", "model.arch", "seed",
                                     "best", "test", "epochs", "duration", "params"]
    assert "model.hidden" not in result.stdout and "more differing" not in result.stdout
    report = json.loads(cli("runs", three_runs, "--json", "--columns", "seed").stdout)
    assert report["differing"] == ["model.arch", "model.hidden", "optimizer.lr"]
    assert report["runs"][0]["hyperparameters"] == {"model.arch": "mlp", "model.hidden": 32, "optimizer.lr": 0.01,
                                                    "seed": 0}


def test_an_unknown_column_is_one_line_naming_the_closest_key(cli, three_runs):
    result = cli("runs", three_runs, "--columns", "model.arch,optimizer.rl")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --columns optimizer.rl: no run has this key; "
                                    "did you mean 'optimizer.lr'?")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("width, shown, left_out", [
    (120, ["sweep.k10", "sweep.k11", "sweep.k12"], "10 more differing keys not shown; choose the columns "
                                                   "with --columns, e.g. --columns sweep.k00,sweep.k01"),
    (130, ["sweep.k00", "sweep.k10", "sweep.k11", "sweep.k12"],  # of keys as differing, the first first
     "9 more differing keys not shown; choose the columns with --columns, e.g. --columns sweep.k01,sweep.k02"),
])
def test_by_default_the_most_differing_keys_that_fit_and_a_line_on_the_rest(cli, sweep_runs, monkeypatch,
                                                                            width, shown, left_out):
    monkeypatch.setenv("COLUMNS", str(width))
    result = cli("runs", sweep_runs)
    assert result.exit_code == 0, result.output
    assert header(result.stdout) == ["run", "status", *shown, "best", "test", "epochs", "duration", "params"]
    table = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert max(map(len, table)) <= width and "…" not in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"... and {left_out}"


def test_a_wide_terminal_shows_every_differing_key(cli, sweep_runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    result = cli("runs", sweep_runs)
    assert header(result.stdout)[2:-5] == [f"sweep.k{k:02d}" for k in range(13)]
    assert "more differing" not in result.stdout


def test_most_differing_counts_distinct_values_and_keeps_the_order_of_ties():
    rows = [{"hyperparameters": {"a": 1, "b": run, "c": run % 2, "d": run % 2}} for run in range(3)]
    assert most_differing(rows, ["a", "c", "b", "d"]) == ["b", "c", "d", "a"]
