"""Every shipped config trains, one epoch of it, to better than where it started."""

import pytest

import mltrain
from conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHORT_RUN_EPOCHS = {"digits_transformer": 3}  # one epoch is still its warmup


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_one_epoch(path, tmp_path):
    epochs = SHORT_RUN_EPOCHS.get(path.stem, 1)
    result = mltrain.fit(path, overrides=[f"train.epochs={epochs}", f"output.dir={tmp_path}"])
    assert result.summary["status"] == "completed" and result.summary["steps"] > 0
    # Better on val than the same model untrained (one step at a negligible lr): each config's
    # model learned something in its short run. (Not ln(classes): an output bias set to the class
    # prior already beats that for text.)
    untrained = mltrain.fit(path, overrides=["train.epochs=1", "train.max_steps=1", "optimizer.lr=1e-12",
                                             "scheduler.warmup_steps=0", f"output.dir={tmp_path / 'untrained'}"])
    assert result.summary["final"]["val/loss"] < untrained.summary["final"]["val/loss"]


def test_the_reference_config_loads_with_the_defaults_it_shows():
    cfg = mltrain.config.load_config(REPO / "configs/reference.yaml")
    assert cfg.model.hidden == (128,) and cfg.optimizer.betas == (0.9, 0.999)
