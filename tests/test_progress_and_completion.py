"""The progress bar at terminal widths, `--version` and shell completion."""

import io
import os
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console

import mltrain
from conftest import MLTRAIN
from mltrain.console import ProgressView

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def bar_frames(width: int, steps: int) -> list[str]:
    """What a terminal `width` columns wide shows of an epoch's bar: every frame, as text."""
    screen = io.StringIO()
    view = ProgressView(console=Console(width=width, force_terminal=True, file=screen))
    view.start_epoch(3, 10, steps, done=steps // 3)
    for _ in range(2):
        time.sleep(0.05)
        view.advance()
    view.show(loss=12.3456, lr=1e-3, samples_per_s=1_234_567)
    view.end_epoch()
    frames = re.split(r"[\r\n]", ANSI.sub("", screen.getvalue()))
    return [frame for frame in frames if frame.startswith("epoch 3/10")]


@pytest.mark.parametrize("width", [80, 60])
@pytest.mark.parametrize("steps", [50, 100_000])
def test_the_bar_fits_the_terminal_and_keeps_the_step_count_and_eta(width, steps):
    frames = bar_frames(width, steps)
    assert frames and all(len(frame) <= width for frame in frames)
    last = frames[-1]
    assert f" {steps // 3 + 2}/{steps} " in last and "loss 12.3456" in last
    assert re.search(r" eta \d+:\d\d:\d\d$", last), last


def test_a_wide_terminal_shows_every_column():
    last = bar_frames(140, 1000)[-1]
    assert "lr 1.00e-03" in last and "1,234,567 samples/s" in last
    assert re.search(r"samples/s \d:\d\d:\d\d eta \d:\d\d:\d\d$", last), last  # elapsed, then the eta


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout == f"mltrain {mltrain.__version__}\n"


def complete(*words: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """What bash asks the console script for when TAB is pressed after `words`."""
    line = " ".join(("mltrain",) + words)
    return subprocess.run([MLTRAIN], capture_output=True, text=True,
                          env={**os.environ, "_MLTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": line,
                               "COMP_CWORD": str(len(words)), **(env or {})})


def test_set_completes_config_keys():
    result = complete("fit", "c.yaml", "--set", "optimizer.l")
    assert result.returncode == 0 and result.stdout.split() == ["optimizer.lr="]
    keys = complete("config", "c.yaml", "--set", "train.early").stdout.split()
    assert keys == ["train.early_stopping=", "train.early_stopping.patience=", "train.early_stopping.min_delta="]
    assert "model.arch=" in complete("fit", "--set", "").stdout.split()


def test_commands_complete_and_completion_can_be_installed(cli):
    assert {"fit", "runs", "compare"} <= set(complete("").stdout.split())
    result = cli("--help")
    assert "--install-completion" in result.stdout and "--version" in result.stdout


def test_completion_version_and_new_helps_do_not_import_torch():
    code = ("import os, sys\nfrom typer.testing import CliRunner\nfrom mltrain.cli import app\n"
            "for args in (['--version'], ['compare', '--help'], ['runs', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0\n"
            "from mltrain.cli.options import complete_config_key\n"
            "assert 'optimizer.lr=' in complete_config_key('opt')\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
