"""Every shipped config trains, one epoch of it, to better than where it started."""

import pytest
import torch

import mltrain
from conftest import REPO
from formats import write_mnist
from helpers import write_images

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHORT_RUN_EPOCHS = {"digits_transformer": 3}  # one epoch is still its warmup


def needs_here(path, tmp_path, monkeypatch) -> list[str]:
    """What a config that reads your files needs to train here: the fine-tuning one gets a small
    image folder and a torch cache holding a (fresh) ResNet-18 weight file, and smaller images."""
    if path.stem in ("mnist_cnn", "fashion_mnist_cnn"):  # MNIST-format files, never the download
        write_mnist(tmp_path / "data", "MNIST" if path.stem == "mnist_cnn" else "FashionMNIST")
        return [f"data.root={tmp_path / 'data'}", "data.download=false", "scheduler.warmup_steps=0"]
    if path.stem != "finetune_resnet18":
        return []
    import torchvision

    write_images(tmp_path / "images", 16, channels=3, size=32, seed=0)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return [f"data.root={tmp_path / 'images'}", "data.image_size=32", "data.batch_size=8", "data.val_split=0.25",
            "scheduler.warmup_steps=0"]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_trains_one_epoch(path, tmp_path, monkeypatch):
    epochs = SHORT_RUN_EPOCHS.get(path.stem, 1)
    here = needs_here(path, tmp_path, monkeypatch)
    result = mltrain.fit(path, overrides=[*here, f"train.epochs={epochs}", f"output.dir={tmp_path}"])
    assert result.summary["status"] == "completed" and result.summary["steps"] > 0
    # Better on val than the same model untrained (one step at a negligible lr): each config's
    # model learned something in its short run. (Not ln(classes): an output bias set to the class
    # prior already beats that for text.)
    untrained = mltrain.fit(path, overrides=[*here, "train.epochs=1", "train.max_steps=1", "optimizer.lr=1e-12",
                                             "scheduler.warmup_steps=0", f"output.dir={tmp_path / 'untrained'}"])
    assert result.summary["final"]["val/loss"] < untrained.summary["final"]["val/loss"]


def test_the_reference_config_loads_with_the_defaults_it_shows():
    cfg = mltrain.config.load_config(REPO / "configs/reference.yaml")
    assert cfg.model.hidden == (128,) and cfg.optimizer.betas == (0.9, 0.999)


def test_the_mnist_config_is_the_pytorch_examples_network():
    """configs/mnist_cnn.yaml builds the network of PyTorch's examples/mnist: 1,199,882 parameters."""
    from mltrain.models import build_model

    cfg = mltrain.config.load_config(REPO / "configs/mnist_cnn.yaml")
    model = build_model(cfg.model, mltrain.data.DataSpec((1, 28, 28), 10), 10)
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_199_882
