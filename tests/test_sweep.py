"""mltrain sweep: search, pruning, failures, workers sharing one study, kill -9 and --resume, bad spaces."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import MLTRAIN


def digits_config(directory: Path, lr: float = 0.1, epochs: int = 2, name: str = "digits") -> Path:
    """Digits with a small MLP and SGD: about 0.3 s a trial."""
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "seed": 0,
        "data": {"dataset": "digits", "batch_size": 64},
        "model": {"arch": "mlp", "hidden": [64]},
        "optimizer": {"name": "sgd", "lr": lr},
        "train": {"epochs": epochs, "monitor": "val/accuracy"},
        "output": {"dir": str(directory / "runs")},
    }))
    return path


def read_trials(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "trials.csv", newline="") as file:
        return list(csv.DictReader(file))


def summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def test_a_six_trial_sweep_finds_a_better_lr_than_a_bad_start(cli, tmp_path):
    config = digits_config(tmp_path, lr=1e-5)
    baseline = cli("fit", config, "--run-dir", tmp_path / "baseline", "--quiet")
    assert baseline.exit_code == 0, baseline.output
    bad_value = summary(tmp_path / "baseline")["best"]["value"]

    sweep_dir = tmp_path / "sweep"
    result = cli("sweep", config, "--search", "optimizer.lr=loguniform(1e-3, 1)", "--trials", "6",
                 "--pruner", "none", "--sweep-dir", sweep_dir)
    assert result.exit_code == 0, result.output
    assert "complete" in result.stdout and "best: trial" in result.stdout

    trials = read_trials(sweep_dir)
    assert [row["trial"] for row in trials] == ["0", "1", "2", "3", "4", "5"]
    assert {row["state"] for row in trials} == {"complete"}
    for row in trials:  # each trial is an ordinary run directory trained with its own lr
        run_config = yaml.safe_load((Path(row["run_dir"]) / "config.yaml").read_text())
        assert run_config["optimizer"]["lr"] == float(row["optimizer.lr"])
        assert summary(row["run_dir"])["status"] == "completed"
    assert len({row["optimizer.lr"] for row in trials}) == 6

    best_row = max(trials, key=lambda row: float(row["value"]))
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["optimizer"]["lr"] == float(best_row["optimizer.lr"]) != 1e-5
    assert float(best_row["value"]) > bad_value + 0.3
    for plot in ("history.png", "importance.png"):
        assert (sweep_dir / plot).stat().st_size > 1000

    again = cli("fit", sweep_dir / "best.yaml", "--run-dir", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.output
    assert summary(tmp_path / "again")["best"]["value"] == pytest.approx(float(best_row["value"]))


def test_pruned_and_failed_trials_are_recorded_and_the_sweep_goes_on(cli, tmp_path):
    digits_config(tmp_path, epochs=3)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("sweep:\n"
                          "  config: digits.yaml\n"
                          "  sampler: grid\n"
                          "  pruner: median\n"
                          "  search:\n"
                          "    optimizer.lr: choice(0.1, 0.2, 0.15, 0.25, 0.3, 1e-6, 1e30)\n")
    result = cli("sweep", sweep_file, "--sweep-dir", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    trials = read_trials(tmp_path / "sweep")
    assert [row["state"] for row in trials] == ["complete"] * 5 + ["pruned", "failed"]

    pruned, failed = trials[5], trials[6]
    assert pruned["optimizer.lr"] == "1e-6" and "at validation 1" in pruned["note"]
    pruned_run = summary(pruned["run_dir"])
    assert pruned_run["status"] == "pruned" and "fell behind" in pruned_run["stopped"]
    assert pruned_run["epochs_completed"] == 1 and (Path(pruned["run_dir"]) / "checkpoints/last.pt").is_file()
    assert failed["optimizer.lr"] == "1e30" and "non-finite" in failed["note"]
    assert summary(failed["run_dir"])["status"] == "failed"


def test_a_combination_the_config_refuses_fails_that_trial_only(cli, tmp_path):
    config = digits_config(tmp_path, epochs=1)
    result = cli("sweep", config, "--sampler", "grid", "--pruner", "none", "--sweep-dir", tmp_path / "sweep",
                 "--search", "model.head=choice(softmax, sigmoid)",
                 "--search", "train.label_smoothing=choice(0.0, 0.1)")
    assert result.exit_code == 0, result.output
    states = {(row["model.head"], row["train.label_smoothing"]): row for row in read_trials(tmp_path / "sweep")}
    assert [row["state"] for row in states.values()] == ["complete", "complete", "complete", "failed"]
    assert "label smoothing applies to the softmax head only" in states[("sigmoid", "0.1")]["note"]


def test_two_worker_processes_share_one_sqlite_study_and_run_every_trial_once(cli, tmp_path):
    """`--jobs 2` starts two worker processes (`mltrain sweep --join DIR --worker`); the command that
    starts them and reports runs in this process."""
    config = digits_config(tmp_path, epochs=2)
    sweep_dir = tmp_path / "sweep"
    run = cli("sweep", config, "--search", "optimizer.lr=loguniform(1e-2, 0.5)",
              "--search", "model.hidden=choice([32], [64])", "--trials", "4", "--jobs", "2",
              "--pruner", "none", "--sweep-dir", sweep_dir)
    assert run.exit_code == 0, run.output

    trials = read_trials(sweep_dir)
    assert [row["trial"] for row in trials] == [str(n) for n in range(4)]
    assert {row["state"] for row in trials} == {"complete"}
    assert len({row["worker"] for row in trials}) == 2  # both processes ran trials
    assert sorted(path.name for path in sweep_dir.glob("trial-*")) == [f"trial-{n:04d}" for n in range(4)]
    for row in trials:
        assert summary(row["run_dir"])["status"] == "completed"
        assert len((Path(row["run_dir"]) / "metrics.csv").read_text().splitlines()) == 1 + 2  # trained once


def test_kill_9_mid_sweep_then_resume_completes_the_count_without_duplicates(cli, tmp_path):
    config = digits_config(tmp_path, epochs=8)
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen([MLTRAIN, "sweep", str(config), "--search", "optimizer.lr=loguniform(1e-2, 0.5)",
                                "--trials", "4", "--pruner", "none", "--sweep-dir", str(sweep_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (sweep_dir / "trial-0001/metrics.csv").exists():  # trial 1 is mid-run
        assert process.poll() is None and time.monotonic() < deadline, "the sweep did not reach trial 1"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    result = cli("sweep", "--resume", sweep_dir)
    assert result.exit_code == 0, result.output
    trials = read_trials(sweep_dir)
    by_state = {state: [row for row in trials if row["state"] == state] for state in ("complete", "interrupted")}
    assert len(by_state["complete"]) == 4 and len(trials) == 5
    (killed,) = by_state["interrupted"]
    assert killed["trial"] == "1" and "retried as trial 4" in killed["note"]
    assert trials[4]["optimizer.lr"] == killed["optimizer.lr"]  # the retry repeats the killed trial's draw
    assert len({row["optimizer.lr"] for row in by_state["complete"]}) == 4

    again = cli("sweep", "--resume", sweep_dir)  # nothing left: the same table, no new trial
    assert again.exit_code == 0, again.output
    assert len(read_trials(sweep_dir)) == 5


def test_join_by_study_name_and_storage_url(cli, tmp_path):
    config = digits_config(tmp_path, epochs=1)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = cli("sweep", config, "--search", "optimizer.lr=choice(0.1, 0.2)", "--sampler", "grid",
                "--storage", storage, "--sweep-dir", tmp_path / "lr-sweep")
    assert first.exit_code == 0, first.output
    assert json.loads((tmp_path / "lr-sweep/sweep.json").read_text()) == {"study": "lr-sweep", "storage": storage}

    joined = cli("sweep", "--join", "lr-sweep", "--storage", storage, "--sweep-dir", tmp_path / "elsewhere")
    assert joined.exit_code == 0, joined.output
    assert [row["state"] for row in read_trials(tmp_path / "elsewhere")] == ["complete", "complete"]
    assert (tmp_path / "elsewhere/best.yaml").is_file() and (tmp_path / "elsewhere/base.yaml").is_file()


@pytest.mark.parametrize("search, message", [
    ("optimizer.lrr=loguniform(1e-4,1e-1)", "unknown key in optimizer; did you mean 'lr'?"),
    ("optimizer.lr=loguniform(0,1e-1)", "loguniform needs 0 < LOW"),
    ("optimizer.lr=uniform(0.1,0.01)", "uniform needs LOW below HIGH"),
    ("optimizer.lr=loguniform(1e-4,1e-1", "expected KEY=DIST(...)"),
    ("optimizer.lr=logunifrom(1e-4,1e-1)", "did you mean 'loguniform'?"),
    ("model.dropout=uniform(0,1.5)", "model.dropout: 1.5 must be below 1"),
    ("model.hidden=choice([64],[128)", "is not a valid YAML value"),
    ("optimizer.name=choice(adam,sgdd)", "unknown optimizer 'sgdd'"),
    ("train.monitor=choice(val/loss,val/accuracy)", "decides what the sweep optimises"),
])
def test_a_bad_search_space_exits_2_before_any_trial(cli, tmp_path, search, message):
    config = digits_config(tmp_path)
    result = cli("sweep", config, "--search", search, "--trials", "2", "--sweep-dir", tmp_path / "sweep")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: --search {search}: ") and message in result.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_bad_sweep_file_names_its_line(cli, tmp_path):
    digits_config(tmp_path)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("sweep:\n  config: digits.yaml\n  trials: 2\n  search:\n"
                          "    optimizer.lr: loguniform(1e-4, 1e-1)\n    model.hiden: choice([32], [64])\n")
    result = cli("sweep", sweep_file)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {sweep_file}:6: model.hiden: unknown key in model; did you mean 'hidden'?")
    assert not (tmp_path / "runs").exists()


def test_missing_optuna_exits_2_with_the_pip_command(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    result = cli("sweep", digits_config(tmp_path), "--search", "optimizer.lr=loguniform(1e-4,1e-1)", "--trials", "2")
    assert result.exit_code == 2
    assert 'pip install "mltrain[sweep]"' in result.stderr



def test_importances_are_left_out_when_no_parameter_varied(cli, tmp_path):
    config = digits_config(tmp_path, epochs=1)
    result = cli("sweep", config, "--search", "optimizer.lr=choice(0.1)", "--trials", "2", "--pruner", "none",
                 "--sweep-dir", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sweep/history.png").is_file() and not (tmp_path / "sweep/importance.png").exists()
    assert "no importance.png: parameter importances need complete trials whose parameters differ" in result.stdout


def test_a_lock_path_that_is_a_folder_is_one_line(cli, tmp_path):
    from helpers import write_config

    sweep_dir = tmp_path / "sweep"
    config = write_config(tmp_path, train={"epochs": 1})
    started = cli("sweep", config, "--search", "optimizer.lr=choice(0.01)", "--sampler", "grid", "--sweep-dir",
                  sweep_dir)
    assert started.exit_code == 0, started.output
    (sweep_dir / "study.db.lock").unlink()
    (sweep_dir / "study.db.lock").mkdir()
    result = cli("sweep", "--resume", sweep_dir)
    assert result.exit_code == 2, result.output
    assert "study.db.lock: cannot open the sweep's lock file" in result.output


def test_a_storage_that_cannot_record_a_trial_is_one_line_and_resumable(cli, tmp_path, monkeypatch):
    import optuna
    from sqlalchemy.exc import OperationalError

    from helpers import write_config

    def disk_full(*args, **keys):
        raise OperationalError("UPDATE trials", {}, Exception("database or disk is full"))

    sweep_dir = tmp_path / "sweep"
    config = write_config(tmp_path, train={"epochs": 1})
    with monkeypatch.context() as patched:
        patched.setattr(optuna.study.Study, "tell", disk_full)
        result = cli("sweep", config, "--search", "optimizer.lr=choice(0.01)", "--sampler", "grid", "--sweep-dir",
                     sweep_dir)
    assert result.exit_code == 2, result.output
    assert "trial 0: the study's storage refused to record it (database or disk is full)" in result.output
    assert f"mltrain sweep --resume {sweep_dir}" in result.output
    # The worker that stopped there is this test's own process: as if it had exited, as the command does.
    from optuna.storages import RDBStorage

    storage = RDBStorage(f"sqlite:///{sweep_dir / 'study.db'}")
    (trial,) = storage.get_all_trials(storage.get_study_id_from_name(sweep_dir.name))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    storage.set_trial_user_attr(trial._trial_id, "worker", f"{trial.user_attrs['worker'].split(':')[0]}:"
                                                           f"{ended.stdout.strip()}")
    resumed = cli("sweep", "--resume", sweep_dir)  # the trial left RUNNING by a dead worker runs again
    assert resumed.exit_code == 0, resumed.output
    rows = read_trials(sweep_dir)
    assert [row["state"] for row in rows] == ["interrupted", "complete"] and "retried as trial 1" in rows[0]["note"]
