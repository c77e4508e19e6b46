"""Every shipped config trains a few steps."""

import pytest

import mltrain
from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_one_epoch(path, tmp_path):
    result = mltrain.fit(path, overrides=["train.epochs=1", f"output.dir={tmp_path}"])
    assert result.summary["status"] == "completed" and result.summary["steps"] > 0
