"""Export: every architecture family to ONNX, torch.export (.pt2) and safetensors, each file run
back and compared with PyTorch here, independently of the command's own check."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import mltrain
from conftest import MLTRAIN
from formats import write_mnist
from helpers import write_table
from mltrain.export import export, load_safetensors
from mltrain.restore import restore
from mltrain.run_dir import RunDir

CORPUS = "a small text for a tiny language model to read, again and again. " * 12


# family: (data section, model section); one tiny run each, a step or two of training.
FAMILIES = {
    "mlp": ({"dataset": "csv", "path": "table.csv", "target": "kind"}, {"arch": "mlp", "hidden": [8]}),
    "cnn-1d": ({"dataset": "parity", "length": 16, "samples": 60}, {"arch": "cnn", "channels": [4]}),
    "cnn-2d": ({"dataset": "mnist", "root": "data"}, {"arch": "cnn", "channels": [4], "norm": "batch"}),
    "resnet18": ({"dataset": "digits", "limit": 16}, {"arch": "resnet18"}),
    "rnn": ({"dataset": "adding", "length": 8, "samples": 60}, {"arch": "rnn", "hidden_size": 8, "layers": 1,
                                                                  "head": "linear"}),
    "lstm": ({"dataset": "parity", "length": 8, "samples": 60}, {"arch": "lstm", "hidden_size": 8, "layers": 2,
                                                                   "bidirectional": True}),
    "gru": ({"dataset": "sorting", "length": 6, "samples": 60, "vocab_size": 4}, {"arch": "gru", "hidden_size": 8,
                                                                                   "layers": 1}),
    "transformer": ({"dataset": "digits", "limit": 16}, {"arch": "transformer", "d_model": 16, "heads": 2,
                                                         "layers": 1, "patch_size": 2}),
    "gpt": ({"dataset": "text", "path": "corpus.txt", "block_size": 8, "windows": 32},
            {"arch": "gpt", "d_model": 16, "heads": 2, "layers": 1}),
}
FORMATS = ("onnx", "pt2", "safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("families")
    write_table(directory / "table.csv", rows=90, recipe="colours")
    (directory / "corpus.txt").write_text(CORPUS)
    write_mnist(directory / "data", train=40, test=20)
    trained = {}
    for family, (data, model) in FAMILIES.items():
        config = {"seed": 0, "data": {"batch_size": 16, **data}, "model": model,
                  "optimizer": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "max_steps": 2, "ema": 0.5},
                  "output": {"dir": str(directory / "runs")}}
        for key in ("path", "root"):
            if key in config["data"]:
                config["data"][key] = str(directory / config["data"][key])
        trained[family] = mltrain.fit(config, run_dir=directory / family).run_dir
    return trained


def run_back(format, path, x):
    """The exported file's outputs for x, run by the format's own reader."""
    if format == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    if format == "pt2":
        return torch.export.load(str(path)).module()(x)
    return load_safetensors(path)[0](x)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_exports_to_every_format(runs, family, format):
    exported = export(runs[family], format)
    assert exported.path == runs[family] / "export" / f"best{'.' + format}"
    assert exported.path.is_file() and exported.max_abs_diff <= exported.tolerance
    assert exported.batch.endswith("of the run's val split" if family == "gpt" else "of the run's test split")

    restored = restore(runs[family], device="cpu")
    x = restored.data().splits["val" if family == "gpt" else "test"][0][:5].cpu()  # not the check's batch size
    with torch.no_grad():
        expected = restored.model.eval()(x)
        if family == "rnn":  # regression: the file gives the head's values, (B,) in the target's units
            expected = restored.learner.criterion.predict(expected)
        got = run_back(format, exported.path, x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_the_safetensors_sidecar_rebuilds_and_preprocesses_without_the_run(runs, tmp_path):
    """The sidecar alone: the config and spec to rebuild the model, and the data encoding."""
    states = {}
    for family in ("mlp", "cnn-2d", "gpt"):
        copy = tmp_path / family
        subprocess.run(["cp", "-r", str(runs[family]), str(copy)], check=True)
        exported = export(copy, "safetensors", tmp_path / f"{family}.safetensors")
        restored = restore(copy, device="cpu")
        x = restored.data().splits["val" if family == "gpt" else "test"][0][:3].cpu()
        with torch.no_grad():
            expected = restored.model.eval()(x)
        subprocess.run(["rm", "-r", str(copy)], check=True)  # no checkpoint, no run directory left
        model, sidecar = load_safetensors(exported.path)
        with torch.no_grad():
            assert torch.equal(model(x), expected)
        assert (tmp_path / f"{family}.json").is_file()
        assert sidecar["averaged"] is True and sidecar["config"]["model"]["arch"] == FAMILIES[family][1]["arch"]
        states[family] = sidecar["data_state"]
        assert sidecar["spec"]["sample_shape"] == list(restored.spec.sample_shape)
    assert states["mlp"]["class_names"] == ["big", "small"]
    assert [column["name"] for column in states["mlp"]["columns"]] == ["size", "colour"]
    assert states["mlp"]["columns"][1]["categories"] == ["blue", "green", "red"]
    assert len(states["cnn-2d"]["mean"]) == len(states["cnn-2d"]["std"]) == 1
    assert states["gpt"]["vocabulary"] == "".join(sorted(set(CORPUS)))


def test_the_cli_prints_the_check_and_writes_where_asked(cli, runs, tmp_path):
    result = cli("export", runs["lstm"], "--format", "onnx", "--output", tmp_path / "lstm.onnx")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"exported {tmp_path / 'lstm.onnx'} and {tmp_path / 'lstm.onnx.json'} (onnx, ")
    assert lines[1].startswith("checked with onnxruntime on 12 samples of the run's test split: max abs difference ")
    assert (tmp_path / "lstm.onnx").is_file()
    result = cli("export", runs["lstm"], "--format", "pt2", "--output", tmp_path / "missing" / "lstm.pt2")
    assert result.exit_code == 2 and "no such folder" in result.stderr


def test_without_the_data_the_check_runs_on_random_inputs_and_says_so(cli, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "arrays.npz", x_train=rng.normal(size=(40, 5)).astype(np.float32), y_train=np.arange(40) % 2)
    config = {"data": {"dataset": "npz", "path": str(tmp_path / "arrays.npz")}, "model": {"arch": "mlp"},
              "train": {"epochs": 1}, "output": {"dir": str(tmp_path / "runs")}}
    run = mltrain.fit(config, run_dir=tmp_path / "run").run_dir
    (tmp_path / "arrays.npz").unlink()
    result = cli("export", run, "--format", "pt2")
    assert result.exit_code == 0, result.output
    assert f"on 16 random inputs shaped by the checkpoint's spec (its data is not readable here: data.path " \
           f"{tmp_path / 'arrays.npz'}: no such file)" in result.stdout
    assert (run / "export" / "best.pt2").is_file()


def test_a_difference_above_the_tolerance_is_exit_1(cli, runs, monkeypatch):
    monkeypatch.setattr("mltrain.export.TOLERANCE", 0.0)  # onnxruntime's float sums differ from torch's in ulps
    result = cli("export", runs["transformer"], "--format", "onnx")
    assert result.exit_code == 1
    assert "differ from PyTorch's by up to" in result.stderr and "above the tolerance 0.0e+00" in result.stderr


@pytest.mark.parametrize("format, package, extra", [("onnx", "onnxruntime", "onnx"),
                                                     ("safetensors", "safetensors", "safetensors")])
def test_a_missing_package_is_exit_2_with_the_pip_command(cli, runs, monkeypatch, format, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    result = cli("export", runs["mlp"], "--format", format)
    assert result.exit_code == 2
    assert f"pip install \"mltrain[{extra}]\"" in result.stderr and package in result.stderr


def test_a_model_a_format_cannot_express_is_exit_2(cli, tmp_path, monkeypatch):
    """A user's model that branches on its data: torch.export and ONNX cannot capture it; safetensors can."""
    (tmp_path / "branchy.py").write_text(textwrap.dedent('''
        from torch import nn


        class Branchy(nn.Module):
            """Picks a layer by the sign of the batch's sum."""

            def __init__(self, input_shape, num_outputs):
                super().__init__()
                self.a, self.b = nn.Linear(input_shape[0], num_outputs), nn.Linear(input_shape[0], num_outputs)

            def forward(self, x):
                return self.a(x) if float(x.sum()) > 0 else self.b(x)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    config = {"data": {"dataset": "spirals", "points": 30}, "model": {"arch": "branchy:Branchy"},
              "train": {"epochs": 1}, "output": {"dir": str(tmp_path / "runs")}}
    run = mltrain.fit(config, run_dir=tmp_path / "run").run_dir
    for format in ("onnx", "pt2"):
        result = cli("export", run, "--format", format)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: --format {format} cannot express model.arch 'branchy:Branchy' "
                                        "(GuardOnDataDependentSymNode: Could not guard on data-dependent expression")
        assert result.stderr.endswith("--format safetensors stores any model's weights\n")
        assert len(result.stderr.splitlines()) == 1
    assert cli("export", run, "--format", "safetensors").exit_code == 0


def test_the_console_script_exports_in_a_fresh_process(runs, tmp_path):
    result = subprocess.run([MLTRAIN, "export", str(runs["gpt"]), "--format", "safetensors", "--output",
                             str(tmp_path / "gpt.safetensors")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "a model rebuilt from the sidecar on 9 samples of the run's val split" in result.stdout
    assert (tmp_path / "gpt.safetensors").is_file() and (tmp_path / "gpt.json").is_file()


@pytest.fixture
def run_copy(runs, tmp_path):
    """A run of its own to spoil: the mlp's, copied without what earlier tests exported."""
    return Path(shutil.copytree(runs["mlp"], tmp_path / "run", symlinks=True, ignore=shutil.ignore_patterns("export")))


def refused(result, path):
    """Exit 2 with one line naming `path`."""
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and str(path) in result.stderr
    return True


def test_the_checkpoint_run_files_and_a_file_export_did_not_write_are_not_replaced(cli, run_copy, tmp_path):
    checkpoint, kept = run_copy / "checkpoints" / "best.pt", (run_copy / "checkpoints" / "best.pt").read_bytes()
    for force in ((), ("--force",)):  # the run's own files: never
        assert refused(cli("export", run_copy, "--format", "pt2", "--output", checkpoint, *force), checkpoint)
        summary = run_copy / "summary.json"
        assert refused(cli("export", run_copy, "--format", "safetensors", "--output", run_copy / "summary.safetensors",
                           *force), summary)
    assert checkpoint.read_bytes() == kept and json.loads(summary.read_text())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.json").write_text("mine")  # where the sidecar of model.safetensors would go
    assert refused(cli("export", run_copy, "--format", "safetensors", "--output",
                       tmp_path / "models" / "model.safetensors"), tmp_path / "models" / "model.json")
    assert [path.name for path in (tmp_path / "models").iterdir()] == ["model.json"]
    assert (tmp_path / "models" / "model.json").read_text() == "mine"


def test_force_replaces_a_file_export_did_not_write(cli, runs, tmp_path):
    (tmp_path / "model.onnx").write_text("mine")
    assert refused(cli("export", runs["mlp"], "--format", "onnx", "--output", tmp_path / "model.onnx"),
                   tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_text() == "mine"
    result = cli("export", runs["mlp"], "--format", "onnx", "--output", tmp_path / "model.onnx", "--force")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.onnx").read_bytes() != b"mine"


def test_export_writes_through_no_link(cli, run_copy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_copy / "export").symlink_to(outside)
    assert refused(cli("export", run_copy, "--format", "onnx"), run_copy / "export")
    (run_copy / "export").unlink()
    (run_copy / "export").mkdir()
    (run_copy / "export" / "best.onnx").symlink_to(outside / "model.onnx")
    assert refused(cli("export", run_copy, "--format", "onnx", "--force"), run_copy / "export" / "best.onnx")
    assert not any(outside.iterdir())


def test_export_takes_the_run_lock_and_replaces_its_own_files(cli, run_copy):
    with RunDir.reopen(run_copy):  # another process writing the run: fit, resume, eval, export
        assert refused(cli("export", run_copy, "--format", "safetensors"), run_copy)
    for _ in range(2):
        result = cli("export", run_copy, "--format", "safetensors")
        assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (run_copy / "export").iterdir()) == ["best.json", "best.safetensors"]


@contextlib.contextmanager
def read_only(directory):
    """`directory` unwritable, for root too (made immutable where its mode does not stop root)."""
    directory.chmod(0o555)
    immutable = os.access(directory, os.W_OK) and subprocess.run(["chattr", "+i", str(directory)],
                                                                 capture_output=True).returncode == 0
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("cannot make a directory read-only here")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


def test_a_read_only_run_directory_is_exit_2_suggesting_output(cli, run_copy, tmp_path):
    with read_only(run_copy):
        result = cli("export", run_copy, "--format", "pt2")
        assert refused(result, run_copy) and "--output" in result.stderr
        result = cli("export", run_copy, "--format", "pt2", "--output", tmp_path / "model.pt2")
        assert result.exit_code == 0, result.output
