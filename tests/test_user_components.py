"""Users bring their own model and dataset: by import path, and as an installed entry-point plugin.
Each goes through fit, eval (a fresh process) and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import MLTRAIN
from helpers import write_package
from test_resume import ended, wait_for_step

NETS = '''
from torch import nn


class TinyNet(nn.Sequential):
    """Two linear layers around a configurable width."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 16, scale: float = 1.0):
        features = 1
        for side in input_shape:
            features *= side
        super().__init__(nn.Flatten(), nn.Linear(features, width), nn.Tanh(), nn.Linear(width, num_outputs))


def not_a_module(input_shape, num_outputs):
    return "a string"


def no_parameters(input_shape, num_outputs):
    return nn.Flatten()


def wrong_width(input_shape, num_outputs):
    return nn.Linear(input_shape[0], num_outputs + 4)


def broken_optimizer(params, lr):
    raise ValueError("this optimizer is broken")


def not_an_optimizer(params, lr):
    return "a string"


def broken_scheduler(optimizer):
    raise ValueError("this scheduler is broken")


class TinyLM(nn.Module):
    """Next-character logits from each character alone: (B, T) ids -> (B, T, vocabulary)."""

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, width: int = 16):
        super().__init__()
        vocabulary = num_outputs // input_shape[0]
        self.embedding, self.output = nn.Embedding(vocabulary, width), nn.Linear(width, vocabulary)

    def forward(self, tokens):
        return self.output(self.embedding(tokens))
'''

DATA = '''
import numpy as np


def blobs(points: int = 200, spread: float = 0.3, seed: int = 0):
    """Three Gaussian blobs in 2-D, a class each."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    y = rng.integers(0, 3, points)
    x = centres[y] + spread * rng.standard_normal((points, 2))
    test = rng.integers(0, 3, 60)
    return {"train": (x.astype("float32"), y), "test": (centres[test] + spread * rng.standard_normal((60, 2)), test),
            "classes": ["north", "east", "west"]}
'''


ENTRY_POINTS = {"mltrain.architectures": {"tiny": "tinypkg.nets:TinyNet"},
                "mltrain.datasets": {"blobs": "tinypkg.data:blobs"}}


def make_user_package(directory):
    """A package `tinypkg` on PYTHONPATH, and a plugin distribution declaring entry points for it."""
    site = write_package(directory / "site", "tinypkg", {"nets": NETS, "data": DATA}, plugin="tinyplugin",
                         entry_points=ENTRY_POINTS)
    return directory, {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def user_package(tmp_path):
    return make_user_package(tmp_path)


@pytest.fixture(scope="module")
def user_package_for_module(tmp_path_factory):
    return make_user_package(tmp_path_factory.mktemp("user"))


def config(directory, arch, dataset, **train):
    path = directory / f"{arch.replace(':', '_')}.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dataset": dataset, "points": 400, "batch_size": 16},
        "model": {"arch": arch, "width": 12},
        "optimizer": {"name": "adam", "lr": 0.02},
        "train": {"epochs": 3, "log_every_steps": 1, **train},
        "output": {"dir": str(directory / "runs")},
    }))
    return path


# Runs several commands, one after another, in one fresh process (one Python and torch start-up,
# not one each) as the console script runs each: mltrain.cli.main, its exit code, what it wrote to
# stdout and stderr, and a traceback on stderr for an exception that escapes, as the interpreter prints.
IN_ONE_PROCESS = """
import contextlib, io, json, sys, traceback, warnings
warnings.simplefilter("always")  # a warning a later command repeats is shown, as in its own process
from mltrain.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["mltrain", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_in_one_process(env, *commands):
    """Each command (a list of arguments after `mltrain`) in turn in one fresh process: a
    CompletedProcess-like (returncode, stdout, stderr) for each."""
    done = subprocess.run([sys.executable, "-c", IN_ONE_PROCESS, json.dumps([list(map(str, c)) for c in commands])],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return [SimpleNamespace(**result) for result in json.loads(done.stdout.splitlines()[-1])]


@pytest.mark.parametrize("arch, dataset", [("tinypkg.nets:TinyNet", "tinypkg.data:blobs"), ("tiny", "blobs")],
                         ids=["import-path", "entry-point"])
def test_user_model_and_dataset_fit_eval_and_resume_after_kill(user_package, arch, dataset):
    """Both ways of naming a component go through fit and eval, each in a fresh process. The kill -9
    and resume runs for the import path, the one that differs on resume (it needs --trust-code): an
    entry point is rebuilt from the stored config by name as eval's fresh process rebuilds it. The
    run to be killed trains beside the whole one; the evals and the resume share one fresh process
    (the refused eval imports nothing)."""
    directory, env = user_package
    path = config(directory, arch, dataset, checkpoint_every_steps=5)
    trust = ["--trust-code"] if ":" in arch else []  # an import path stored in a checkpoint runs only if trusted
    with open(directory / "whole.err", "w") as errors:  # a file, not a pipe: nobody reads while the other runs
        whole = subprocess.Popen([MLTRAIN, "fit", str(path), "--run-dir", str(directory / "whole")],
                                 stdout=subprocess.DEVNULL, stderr=errors, env=env)
    killed = None
    try:
        if trust:
            killed = subprocess.Popen([MLTRAIN, "fit", str(path), "--run-dir", str(directory / "killed")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            wait_for_step(directory / "killed", 30, killed)
            killed.send_signal(signal.SIGKILL)
            killed.wait()
        assert whole.wait(timeout=300) == 0, (directory / "whole.err").read_text()
    finally:
        for process in (whole, killed):
            ended(process)
    saved = yaml.safe_load((directory / "whole/config.yaml").read_text())
    assert saved["model"] == {"arch": arch, "head": "softmax", "weights": None, "weights_strict": True, "width": 12,
                              "scale": 1.0}
    assert saved["data"]["dataset"] == dataset and saved["data"]["spread"] == 0.3
    summary = json.loads((directory / "whole/summary.json").read_text())
    assert summary["test"]["test/accuracy"] > 0.9  # three well-separated blobs

    if not trust:
        (report,) = run_in_one_process(env, ("eval", directory / "whole", "--json"))
    else:
        refused, report, resumed = run_in_one_process(
            env, ("eval", directory / "whole", "--json"), ("eval", directory / "whole", "--json", *trust),
            ("fit", "--resume", directory / "killed", *trust))
        assert refused.returncode == 2 and "--trust-code" in refused.stderr and refused.stdout == ""
    assert report.returncode == 0, report.stderr
    scored = json.loads(report.stdout)
    assert scored["class_names"] == ["north", "east", "west"]
    assert scored["metrics"]["test/accuracy"] == pytest.approx(summary["test"]["test/accuracy"])
    if not trust:
        return

    assert resumed.returncode == 0, resumed.stderr
    for name in ("whole", "killed"):
        assert (directory / name / "checkpoints/last.pt").exists()
    whole_weights = torch.load(directory / "whole/checkpoints/last.pt", weights_only=True)["model"]
    resumed_weights = torch.load(directory / "killed/checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(whole_weights[key], resumed_weights[key]) for key in whole_weights)


def test_user_components_are_listed_with_their_keys(user_package_for_module):
    _, env = user_package_for_module
    env = {**env, "COLUMNS": "250"}
    listed, datasets = run_in_one_process(env, ("list", "architectures"), ("list", "datasets"))
    assert listed.returncode == 0, listed.stderr
    assert "tiny" in listed.stdout and "width=16" in listed.stdout and "tinyplugin" in listed.stdout
    assert "points=200" in datasets.stdout


BAD_COMPONENTS = [
    ({"arch": "nopkg.nets:Net"}, "cannot import module 'nopkg.nets'"),
    ({"arch": "tinypkg.nets:TinyNett"}, "did you mean 'TinyNet'"),
    ({"arch": "tinypkg.nets:TinyNet", "widht": 3}, "did you mean 'width'"),
    ({"arch": "tinypkg.nets:TinyNet", "width": "wide"}, "model.width: expected an integer"),
    ({"arch": "tinypkg.nets:not_a_module"}, "returned str, not a torch.nn.Module"),
    ({"arch": "tinypkg"}, "unknown architecture 'tinypkg'"),
    ({"arch": "tinypkg.nets:no_parameters"}, "built a model with no parameters to train"),
    ({"optimizer": {"name": "tinypkg.nets:broken_optimizer"}}, "failed to build: ValueError: this optimizer is broken"),
    ({"optimizer": {"name": "tinypkg.nets:not_an_optimizer"}}, "returned str, not a torch.optim.Optimizer"),
    ({"scheduler": {"name": "tinypkg.nets:broken_scheduler"}}, "failed to build: ValueError: this scheduler is broken"),
]
WRONG_WIDTH = {"arch": "tinypkg.nets:wrong_width"}


@pytest.fixture(scope="module")
def failed_fits(user_package_for_module):
    """`mltrain fit` of a config for each of BAD_COMPONENTS and WRONG_WIDTH, each with its own output
    folder, all in one fresh process: {json of the model: (result, output folder)}."""
    directory, env = user_package_for_module
    paths = {}
    for number, model in enumerate([bad for bad, _ in BAD_COMPONENTS] + [WRONG_WIDTH]):
        path = directory / f"bad-{number}.yaml"
        sections = model if "arch" not in model else {"model": model}
        path.write_text(yaml.safe_dump({"data": {"dataset": "spirals", "points": 50}, "train": {"epochs": 1},
                                        "output": {"dir": str(directory / f"runs-{number}")}, **sections}))
        paths[json.dumps(model)] = path
    results = run_in_one_process(env, *[("fit", path) for path in paths.values()])
    return {key: (result, path.parent / f"runs-{path.stem.split('-')[1]}")
            for (key, path), result in zip(paths.items(), results)}


@pytest.mark.parametrize("model, message", BAD_COMPONENTS)
def test_bad_user_components_exit_2_naming_the_path(failed_fits, model, message):
    result, runs = failed_fits[json.dumps(model)]
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not runs.exists() or not any(runs.iterdir())


def test_a_model_of_the_wrong_output_width_is_named_at_its_first_batch(failed_fits):
    result, _ = failed_fits[json.dumps(WRONG_WIDTH)]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "returned outputs of shape (" in result.stderr and "needs 3 outputs per sample" in result.stderr


def test_an_optimizer_and_a_scheduler_from_torch_by_import_path(tmp_path, cli):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dataset": "spirals", "points": 60},
        "optimizer": {"name": "torch.optim:Adagrad", "lr": 0.05, "lr_decay": 0.01},
        "scheduler": {"name": "torch.optim.lr_scheduler:StepLR", "step_size": 3, "gamma": 0.5},
        "train": {"epochs": 2, "log_every_steps": 1}, "output": {"dir": str(tmp_path / "runs")},
    }))
    result = cli("fit", path, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=True)
    assert checkpoint["optimizer"]["param_groups"][0]["lr_decay"] == 0.01
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(records) > 6
    for record in records:
        assert record["lr"] == pytest.approx(0.05 * 0.5 ** (record["step"] // 3)), record
    assert "lr_decay: 0.01" in cli("config", path).output


def test_a_user_language_model_trains_on_text_and_samples(user_package):
    directory, env = user_package
    (directory / "corpus.txt").write_text("abcabcabcabd " * 200)
    path = directory / "lm.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"dataset": "text", "path": "corpus.txt", "block_size": 8, "windows": 200},
        "model": {"arch": "tinypkg.nets:TinyLM", "width": 8},
        "optimizer": {"name": "adam", "lr": 0.05}, "train": {"epochs": 3}, "output": {"dir": str(directory / "runs")},
    }))
    fitted, sampled = run_in_one_process(env, ("fit", path, "--run-dir", directory / "lm"), (
        "sample", directory / "lm", "--prompt", "ab", "--tokens", "6", "--temperature", "0", "--trust-code"))
    assert fitted.returncode == 0, fitted.stderr
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.strip() == "abcabcab"  # after a, b comes c; after c, a: learnt from the text


@pytest.mark.parametrize("loader, message", [
    ("def load(points: int = 10):\n    raise ValueError('my loader broke')\n",
     "failed to load: ValueError: my loader broke"),
    ("import numpy as np\n\ndef load(points: int = 10):\n"
     "    return {'train': (np.zeros((points, 2), 'float32'), np.array(['a', 'b'] * (points // 2)))}\n",
     "train holds x of float32 and y of <U1; x must be real numbers"),
], ids=["raises", "string-labels"])
def test_a_dataset_of_your_own_that_fails_is_one_line(cli, tmp_path, monkeypatch, loader, message):
    package = f"loaders_{len(message)}"  # one module per case: a module is imported once per process
    monkeypatch.syspath_prepend(str(write_package(tmp_path / "site", package, {"broken": loader})))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"dataset": f"{package}.broken:load"}, "train": {"epochs": 1},
                                      "output": {"dir": str(tmp_path / "runs")}}))
    result = cli("fit", config)
    assert result.exit_code == 2 and message in result.output, result.output
