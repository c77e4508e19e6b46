"""Every shipped config trains, one epoch of it, to better than where it started."""

import math

import pytest
import torch

import mltrain
from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHORT_RUN_EPOCHS = {"digits_transformer": 3}  # one epoch is still its warmup


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_one_epoch(path, tmp_path):
    epochs = SHORT_RUN_EPOCHS.get(path.stem, 1)
    result = mltrain.fit(path, overrides=[f"train.epochs={epochs}", f"output.dir={tmp_path}"])
    assert result.summary["status"] == "completed" and result.summary["steps"] > 0
    # Better than a uniform guess over the classes (or the target's variance, for regression) on
    # val: the model learned something in its short run.
    num_classes = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)["spec"]["num_classes"]
    final = result.summary["final"]
    chance = math.log(num_classes) if num_classes else 1.0  # regression targets are standardised
    assert final["val/loss"] < chance, final


def test_the_readme_config_reference_is_the_reference_file_and_loads():
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Config reference", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert block == (REPO / "configs/reference.yaml").read_text()
    cfg = mltrain.config.load_config(REPO / "configs/reference.yaml")
    assert cfg.model.hidden == (128,) and cfg.optimizer.betas == (0.9, 0.999)
