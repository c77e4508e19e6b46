import json
import os
import shutil
import sys
from pathlib import Path

# MLTRAIN_TEST_DEVICE=cuda runs the suite on the GPU (device auto picks it), skipping the tests
# marked cpu_only; by default (cpu) the GPUs are hidden from the tests and every process they
# start, so the suite means the same on any machine. Set before torch is imported.
TEST_DEVICE = os.environ.get("MLTRAIN_TEST_DEVICE", "cpu")
if TEST_DEVICE not in ("cpu", "cuda"):
    raise SystemExit(f"MLTRAIN_TEST_DEVICE={TEST_DEVICE!r}: give cpu (the default) or cuda")
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402 (after the device is chosen)
from typer.testing import CliRunner  # noqa: E402

from helpers import write_config  # noqa: E402
from mltrain.cli import app  # noqa: E402

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


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_only(reason): holds only on the CPU; skipped with MLTRAIN_TEST_DEVICE=cuda")


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE != "cuda":
        return
    for item in items:
        marker = item.get_closest_marker("cpu_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"cpu only: {marker.kwargs['reason']}"))
