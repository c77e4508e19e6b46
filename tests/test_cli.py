import json
import os
import subprocess
import sys

import pytest

from conftest import MLTRAIN, REPO


def test_help_of_every_command_imports_no_torch_and_no_optional_package():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom mltrain.cli import app\n"
            "commands = [command.name for command in app.registered_commands]\n"
            "assert {'fit', 'eval', 'predict', 'export', 'sweep', 'sample', 'preflight'} <= set(commands)\n"
            "for args in [[], ['--help']] + [[name, '--help'] for name in commands]:\n"
            "    result = CliRunner().invoke(app, args)\n"
            "    assert result.exit_code == (2 if not args else 0) and 'Usage' in result.output, (args, result.output)\n"
            "loaded = {'torch', 'optuna', 'mlflow', 'tensorboard', 'onnx', 'safetensors'} & set(sys.modules)\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_lists_every_command():
    result = subprocess.run([MLTRAIN, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("fit", "eval", "overfit-tiny", "preflight", "sample", "lr-find", "runs", "list", "config"):
        assert command in result.stdout


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "mltrain", "list", "heads"], capture_output=True, text=True)
    assert result.returncode == 0 and "softmax" in result.stdout


def test_list_every_kind_and_one_kind(cli):
    result = cli("list")
    assert result.exit_code == 0
    for word in ("architectures", "mlp", "relu", "adamw", "cosine", "digits", "spirals", "softmax"):
        assert word in result.stdout
    result = cli("list", "optimizers")
    assert "sgd" in result.stdout and "digits" not in result.stdout


def test_list_unknown_kind_suggests(cli):
    result = cli("list", "optimisers")
    assert result.exit_code == 2
    assert "did you mean 'optimizers'" in result.stderr


def test_config_prints_the_resolved_config(cli, tiny_config):
    result = cli("config", tiny_config, "--set", "optimizer.lr=3e-4")
    assert result.exit_code == 0
    assert "lr: 0.0003" in result.stdout and "monitor: val/loss" in result.stdout


def test_config_error_exits_2_with_one_line_and_no_traceback(cli, tiny_config):
    result = cli("config", tiny_config, "--set", "model.activaton=gelu")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0
    assert "did you mean 'activation'" in result.stderr


def test_debug_env_shows_the_traceback(tiny_config):
    env = {**os.environ, "MLTRAIN_DEBUG": "1"}
    result = subprocess.run([MLTRAIN, "config", str(tiny_config), "--set", "model.activaton=gelu"],
                            capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_missing_config_file_exits_2(cli, tmp_path):
    result = cli("fit", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "config file not found" in result.stderr


def test_impossible_flags_are_refused_clearly(cli, tiny_config):
    assert cli("fit", tiny_config, "--nproc", "0").exit_code == 2
    result = cli("fit", tiny_config, "--resume", "runs/x")
    assert result.exit_code == 2 and "--resume" in result.stderr


def test_every_shipped_config_validates(cli):
    for path in sorted((REPO / "configs").glob("*.yaml")):
        result = cli("config", path)
        assert result.exit_code == 0, (path, result.output)


def test_list_takes_singular_kinds(cli):
    assert "sigmoid" in cli("list", "head").stdout and "gelu" in cli("list", "activation").stdout


def test_a_run_name_is_one_path_component(cli, tiny_config):
    result = cli("config", tiny_config, "--set", "name=../elsewhere")
    assert result.exit_code == 2 and "plain name" in result.stderr


# Run as a command from the command line, the probe records Python's collector (enabled, anything
# frozen) at the collector's calls, at each training's start and at prepare-text's work; for fit,
# also whether a cycle made garbage once collection was deferred is still there.
COLLECTOR_PROBE = """import gc, json, sys, weakref
import mltrain.collector as collector, mltrain.prepare_text, mltrain.train
seen, garbage = {}, None
class Cycle:
    pass
def record(event):
    state = [gc.isenabled(), gc.get_freeze_count() > 0]
    seen.setdefault(event, []).append(state + [garbage() is not None] if sys.argv[1] == "fit" else state)
def probed(owner, name, event):
    original = getattr(owner, name)
    def call(*args, **kwargs):
        record(event)
        return original(*args, **kwargs)
    setattr(owner, name, call)
defer = collector.defer_until_started
def deferring():
    global garbage
    defer()
    cycle = Cycle()
    cycle.self, garbage = cycle, weakref.ref(cycle)
collector.defer_until_started = deferring
probed(collector, "started", "started")
probed(collector, "resume", "resume")
probed(mltrain.train.Training, "run", "training")
probed(mltrain.prepare_text, "prepare_text", "preparing text")
sys.argv = ["mltrain", *sys.argv[1:]]
from mltrain.cli import main
try:
    main()
except SystemExit as end:
    print(json.dumps(seen))
    sys.exit(end.code)
"""


@pytest.mark.parametrize("command, expected", [
    # start-up uncollected; at the learner, its garbage collected and the rest frozen; collection resumed
    ("fit", {"started": [[False, False, True]], "training": [[True, True, False]]}),
    # a learner per trial: collecting from the start, nothing frozen
    ("sweep", {"resume": [[False, False]], "started": [[True, False]] * 2, "training": [[True, False]] * 2}),
    # no learner: collecting from the start
    ("prepare-text", {"resume": [[False, False]], "preparing text": [[True, False]]}),
])
def test_the_command_line_collects_no_garbage_until_start_up_is_over(tiny_config, command, expected):
    corpus = tiny_config.parent / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    args = {"fit": ["fit", tiny_config, "--quiet"],
            "sweep": ["sweep", tiny_config, "--search", "optimizer.lr=choice(0.01,0.02)", "--trials", "2", "--set",
                      "train.epochs=1"],
            "prepare-text": ["prepare-text", corpus, "--vocab-size", "300", "--out", tiny_config.parent / "tokens"]}
    result = subprocess.run([sys.executable, "-c", COLLECTOR_PROBE, *map(str, args[command])], capture_output=True,
                            text=True, cwd=tiny_config.parent, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected
