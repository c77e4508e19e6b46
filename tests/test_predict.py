"""Predict: new CSV rows, images and arrays, preprocessed as in training, give what eval scores."""

import csv
import json
import os
import pty
import select
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import mltrain
from conftest import MLTRAIN
from helpers import write_images, write_table
from mltrain.data.splits import split_arrays
from mltrain.restore import restore

def fit(directory, name, data, model, **train):
    config = {"seed": 0, "data": {"batch_size": 16, **data}, "model": model, "optimizer": {"name": "adam", "lr": 0.02},
              "train": {"epochs": 4, **train}, "output": {"dir": str(directory / "runs")}}
    return mltrain.fit(config, run_dir=directory / name).run_dir


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("table")
    lines = write_table(directory / "table.csv", rows=150, recipe="animals")
    run = fit(directory, "run", {"dataset": "csv", "path": str(directory / "table.csv"), "target": "kind"},
              {"arch": "mlp", "hidden": [16]}, ema=0.8)
    return run, lines


def files_in(run):
    return sorted((path.relative_to(run), path.stat().st_mtime_ns) for path in run.rglob("*"))


def test_csv_rows_predict_what_eval_scores_for_the_same_rows(cli, table_run, tmp_path):
    run, lines = table_run
    rows = lines[1:]
    kinds = sorted({row.split(",")[-1] for row in rows})
    labels = np.array([kinds.index(row.split(",")[-1]) for row in rows])
    restored = restore(run)
    test_rows = split_arrays((np.arange(len(rows)), labels), restored.cfg.data.val_split, restored.cfg.seed,
                             restored.cfg.data.test_split)["test"][0]
    # the test rows with their columns reordered and without the target column
    (tmp_path / "new.csv").write_text("weight,colour,size\n" + "".join(
        "{2},{1},{0}\n".format(*rows[i].split(",")) for i in test_rows))
    before = files_in(run)
    result = cli("predict", run, tmp_path / "new.csv", "--top-k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert files_in(run) == before  # predict writes nothing into the run
    report = json.loads(result.stdout)
    predicted = report["predictions"]
    assert report["task"] == "classification" and report["count"] == len(test_rows) == len(predicted)
    assert [row["input"] for row in predicted] == [f"{tmp_path / 'new.csv'}:{line}" for line in
                                                   range(2, len(test_rows) + 2)]

    evaluated = json.loads(cli("eval", run, "--json").stdout)
    assert evaluated["samples"] == len(test_rows)
    confusion = np.zeros((3, 3), dtype=int)
    for row, true in zip(predicted, labels[test_rows]):
        confusion[true, kinds.index(row["classes"][0])] += 1
    assert confusion.tolist() == evaluated["confusion_matrix"]
    assert np.trace(confusion) / len(test_rows) == pytest.approx(evaluated["metrics"]["test/accuracy"])

    # the probabilities are the softmax of the eval weights (EMA) on the test split eval reads
    x_test = restored.data().splits["test"][0]
    with torch.no_grad():
        expected = restored.model.eval()(x_test).softmax(dim=-1).cpu()
    got = torch.tensor([[row["probabilities"][row["classes"].index(kind)] for kind in kinds] for row in predicted])
    assert torch.allclose(got, expected, atol=1e-6)
    assert all(row["probabilities"] == sorted(row["probabilities"], reverse=True) for row in predicted)


def test_the_target_column_is_ignored_when_present(table_run, tmp_path):
    run, lines = table_run
    (tmp_path / "with.csv").write_text("\n".join(lines[:6]) + "\n")
    (tmp_path / "without.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines[:6]) + "\n")
    with_target, without = mltrain.predict(run, [tmp_path / "with.csv"]), mltrain.predict(run, [tmp_path / "without.csv"])
    assert [row["classes"] for row in with_target] == [row["classes"] for row in without]
    assert [row["probabilities"] for row in with_target] == [row["probabilities"] for row in without]
    assert len(with_target) == 5 and set(with_target[0]) == {"input", "classes", "probabilities"}


@pytest.mark.parametrize("content, message", [
    ("size,colour\n0.1,red\n", "input {file}: no column 'weight'; the model reads the feature columns size, colour, "
                               "weight (columns here: size, colour)"),
    ("size,colour,weight\n0.1,red,0.2\n0.3,purple,0.1\n",
     "{file}:3: column 'colour' is 'purple', a category the training rows did not have; the column is one-hot "
     "encoded over 'blue', 'green', 'red': use one of those"),
    ("size,colour,weight\nbig,red,0.2\n", "{file}:2: column 'size' is not a number there"),
    ("size,colour,weight\n", "input {file}: no data rows"),
])
def test_rows_that_do_not_fit_are_exit_2_naming_the_file(cli, table_run, tmp_path, content, message):
    (tmp_path / "new.csv").write_text(content)
    result = cli("predict", table_run[0], tmp_path / "new.csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: " + message.format(file=tmp_path / "new.csv"))
    assert len(result.stderr.splitlines()) == 1


def test_output_files_are_csv_or_json_lines(cli, table_run, tmp_path):
    run, lines = table_run
    (tmp_path / "new.csv").write_text("\n".join(lines[:4]) + "\n")
    result = cli("predict", run, tmp_path / "new.csv", "--top-k", "2", "--output", tmp_path / "out.csv")
    assert result.exit_code == 0 and f"3 predictions written to {tmp_path / 'out.csv'}" in result.stdout
    with open(tmp_path / "out.csv", newline="") as file:
        table = list(csv.DictReader(file))
    assert list(table[0]) == ["input", "class_1", "probability_1", "class_2", "probability_2"]
    assert [row["input"] for row in table] == [f"{tmp_path / 'new.csv'}:{line}" for line in (2, 3, 4)]
    assert all(float(row["probability_1"]) >= float(row["probability_2"]) for row in table)

    assert cli("predict", run, tmp_path / "new.csv", "--output", tmp_path / "out.jsonl").exit_code == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["classes"][0] for row in rows] == [row["class_1"] for row in table]

    result = cli("predict", run, tmp_path / "new.csv", "--output", tmp_path / "out.txt")
    assert result.exit_code == 2 and "--output" in result.stderr and ".csv or .jsonl" in result.stderr


def test_inputs_of_the_wrong_kind_are_exit_2(cli, table_run, tmp_path):
    run = table_run[0]
    (tmp_path / "notes.txt").write_text("hello")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    for argument, message in ((tmp_path / "missing.csv", f"input {tmp_path / 'missing.csv'}: no such file or folder"),
                              (tmp_path / "notes.txt", f"input {tmp_path / 'notes.txt'}: not an image"),
                              (tmp_path / "photo.png", f"input {tmp_path / 'photo.png'}: the model was trained on "
                                                       "dataset 'csv', whose samples are not image files; give them "
                                                       "as a .npz array shaped (N, 5)")):
        result = cli("predict", run, argument)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("images")
    write_images(directory / "pictures" / "train", 24, size=(12, 10), seed=0)
    write_images(directory / "pictures" / "test", 6, size=(12, 10), seed=1)
    return fit(directory, "run", {"dataset": "image_folder", "root": str(directory / "pictures"), "image_size": 8,
                                  "batch_size": 8}, {"arch": "cnn", "channels": [4]}, epochs=2)


def test_images_are_preprocessed_as_in_training(cli, image_run, tmp_path):
    test_folder = restore(image_run).cfg.data.root + "/test"
    result = cli("predict", image_run, test_folder, "--top-k", "2", "--json")
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)["predictions"]
    assert len(predicted) == 12 and predicted[0]["input"] == f"{test_folder}/dark/0.png"
    evaluated = json.loads(cli("eval", image_run, "--json").stdout)
    confusion = np.zeros((2, 2), dtype=int)
    for row in predicted:
        confusion[["dark", "light"].index(row["input"].split("/")[-2]), ["dark", "light"].index(row["classes"][0])] += 1
    assert confusion.tolist() == evaluated["confusion_matrix"]

    restored = restore(image_run)
    with torch.no_grad():  # the test split eval reads, decoded and normalised by the data source
        expected = restored.model.eval()(restored.data().splits["test"][0][:12]).softmax(dim=-1)
    got = torch.tensor([[row["probabilities"][row["classes"].index(kind)] for kind in ("dark", "light")]
                        for row in predicted])
    assert torch.allclose(got, expected.cpu(), atol=1e-6)

    # the same image as an array of pixels (0..255) is normalised with the stored statistics too
    np.savez(tmp_path / "pixels.npz", x=np.full((1, 3, 8, 8), 40), light=np.full((1, 3, 8, 8), 200, dtype=np.uint8))
    rows = mltrain.predict(image_run, [f"{tmp_path / 'pixels.npz'}:light", tmp_path / "pixels.npz"])
    assert [row["input"] for row in rows] == [f"{tmp_path / 'pixels.npz'}:light[0]", f"{tmp_path / 'pixels.npz'}:x[0]"]
    assert rows[0]["classes"] == ["light"] and rows[1]["classes"] == ["dark"]


def test_images_that_do_not_fit_are_exit_2_naming_the_file(cli, image_run, tmp_path):
    write_images(tmp_path / "grey", 1, channels=1, size=(12, 10), seed=2)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    np.savez(tmp_path / "small.npz", x=np.zeros((2, 3, 4, 4)))
    (tmp_path / "empty").mkdir()
    cases = ((tmp_path / "grey", f"input {tmp_path / 'grey' / 'dark' / '0.png'}: 1 channel, but the model reads 3 "
                                 "channels (3, 8, 8); convert it first"),
             (tmp_path / "broken.png", f"input: cannot decode image {tmp_path / 'broken.png'}: "),
             (tmp_path / "small.npz", f"input {tmp_path / 'small.npz'}: array 'x' holds samples shaped (3, 4, 4), but "
                                      "the model reads samples shaped (3, 8, 8)"),
             (f"{tmp_path / 'small.npz'}:x_test", f"input {tmp_path / 'small.npz'}: no array 'x_test' (arrays "
                                                  "present: x)"),
             (tmp_path / "empty", f"input {tmp_path / 'empty'}: a folder with no images"))
    for argument, message in cases:
        result = cli("predict", image_run, argument)
        assert result.exit_code == 2 and result.stderr.startswith(f"error: {message}"), result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_regression_gives_values_and_language_models_point_to_sample(cli, tmp_path):
    run = fit(tmp_path, "adding", {"dataset": "adding", "length": 6, "samples": 200}, {"arch": "gru", "hidden_size": 8,
                                                                                        "layers": 1, "head": "linear"})
    restored = restore(run)
    x_test, y_test = (tensor.cpu() for tensor in restored.data().splits["test"])
    np.savez(tmp_path / "steps.npz", x=x_test.numpy())
    result = cli("predict", run, tmp_path / "steps.npz", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    values = torch.tensor([row["value"] for row in report["predictions"]])
    assert report["task"] == "regression" and set(report["predictions"][0]) == {"input", "value"}
    evaluated = json.loads(cli("eval", run, "--json").stdout)["metrics"]
    errors = values - y_test
    assert errors.square().mean().item() == pytest.approx(evaluated["test/mse"], rel=1e-5)
    assert errors.abs().mean().item() == pytest.approx(evaluated["test/mae"], rel=1e-5)
    spread = (y_test - y_test.mean()).square().sum()
    assert (1 - errors.square().sum() / spread).item() == pytest.approx(evaluated["test/r2"], rel=1e-5)
    std = restored.data_state["target_scale"]["std"][0]  # the loss is the standardised objective
    assert evaluated["test/loss"] == pytest.approx(evaluated["test/mse"] / std ** 2, rel=1e-5)

    (tmp_path / "corpus.txt").write_text("abcabcabd " * 30)
    gpt = fit(tmp_path, "gpt", {"dataset": "text", "path": str(tmp_path / "corpus.txt"), "block_size": 8,
                                "windows": 16}, {"arch": "gpt", "d_model": 8, "heads": 2, "layers": 1}, epochs=1)
    result = cli("predict", gpt, tmp_path / "steps.npz")
    assert result.exit_code == 2
    assert "holds a language model ('gpt' on dataset 'text')" in result.stderr
    assert f"use `mltrain sample {gpt} --prompt TEXT --tokens N`" in result.stderr


def test_a_terminal_shows_a_progress_bar_on_stderr_and_stdout_stays_json(table_run, tmp_path):
    run, lines = table_run
    (tmp_path / "many.csv").write_text(lines[0] + "\n" + "\n".join(lines[1:] * 4) + "\n")  # 600 rows
    leader, follower = pty.openpty()
    with open(tmp_path / "stdout.json", "w") as stdout:
        process = subprocess.Popen([MLTRAIN, "predict", str(run), str(tmp_path / "many.csv"), "--batch-size", "100",
                                    "--json"], stdout=stdout, stderr=follower, env={**os.environ, "COLUMNS": "80"})
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            try:
                chunk = os.read(leader, 4096) if ready else b""
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
        os.close(leader)
    assert process.returncode == 0
    assert b"predicting" in seen and b"600" in seen
    assert json.loads((tmp_path / "stdout.json").read_text())["count"] == 600

    piped = subprocess.run([MLTRAIN, "predict", str(run), str(tmp_path / "many.csv"), "--batch-size", "100",
                            "--output", str(tmp_path / "out.csv")], capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == ""  # no bar off a terminal
    assert piped.stdout == f"600 predictions written to {tmp_path / 'out.csv'}\n"



def test_targets_in_large_units_train_standardised_and_predict_in_their_units(cli, tmp_path):
    """Prices in the hundreds of thousands: the head learns them standardised with the training
    statistics, and every report and prediction is in the target's units."""
    rng = np.random.default_rng(0)
    lines = ["area,town,price"]
    for i in range(300):
        area, town = rng.uniform(30, 200), ("north", "south")[i % 2]
        lines.append(f"{area:.1f},{town},{2000 * area + (50000 if town == 'north' else 0) + rng.normal(0, 5000):.0f}")
    (tmp_path / "houses.csv").write_text("\n".join(lines) + "\n")
    run = fit(tmp_path, "houses", {"dataset": "csv", "path": str(tmp_path / "houses.csv"), "target": "price",
                                   "batch_size": 32}, {"arch": "mlp", "hidden": [16], "head": "linear"}, epochs=15)
    evaluated = json.loads(cli("eval", run, "--json").stdout)["metrics"]
    assert evaluated["test/r2"] > 0.95 and evaluated["test/mae"] < 15000
    (tmp_path / "new.csv").write_text("area,town\n100,north\n50,south\n")
    values = [row["value"] for row in mltrain.predict(run, [tmp_path / "new.csv"])]
    assert values == pytest.approx([250000, 100000], abs=15000)
