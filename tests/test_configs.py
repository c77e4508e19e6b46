"""Every shipped config trains a few steps."""

import pytest

import mltrain
from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_one_epoch(path, tmp_path):
    result = mltrain.fit(path, overrides=["train.epochs=1", f"output.dir={tmp_path}"])
    assert result.summary["status"] == "completed" and result.summary["steps"] > 0


def test_the_readme_config_reference_is_the_reference_file_and_loads():
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Config reference", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == (REPO / "configs/reference.yaml").read_text()
    cfg = mltrain.config.load_config(REPO / "configs/reference.yaml")
    assert cfg.model.hidden == (128,) and cfg.optimizer.betas == (0.9, 0.999)
