import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import write_config
from mltrain.cli import app

REPO = Path(__file__).resolve().parent.parent
# The console script installed beside this Python (a venv's bin/), else the one on PATH.
MLTRAIN = str(Path(sys.executable).with_name("mltrain")) if Path(sys.executable).with_name("mltrain").exists() \
    else shutil.which("mltrain") or "mltrain"


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(arg) for arg in args])

    return invoke


@pytest.fixture
def tiny_config(tmp_path):
    return write_config(tmp_path)


def only_run(directory: Path) -> Path:
    (run,) = [path for path in (directory / "runs").iterdir() if path.is_dir()]
    return run


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
