import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mltrain.cli import app

REPO = Path(__file__).resolve().parent.parent
# The console script installed beside this Python (a venv's bin/), else the one on PATH.
MLTRAIN = str(Path(sys.executable).with_name("mltrain")) if Path(sys.executable).with_name("mltrain").exists() \
    else shutil.which("mltrain") or "mltrain"


def write_config(directory: Path, name: str = "tiny", **sections) -> Path:
    """A small, fast config: spirals with a small MLP, overridable per section."""
    config = {
        "seed": 0,
        "data": {"dataset": "spirals", "batch_size": 32, "points": 100},
        "model": {"arch": "mlp", "hidden": [32, 32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3},
        "output": {"dir": str(directory / "runs")},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


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
