"""Fine-tuning: zoo architectures started from weight files, the zoo's cache or another run;
a frozen backbone that thaws; per-group learning rates; the zoo's normalisation. No download:
weight files are saved from fresh models, and the cache is a folder of them."""

import os
import shutil
import subprocess
import urllib.error

import pytest
import torch
import torchvision

import mltrain
from conftest import MLTRAIN, read_jsonl, write_config
from helpers import write_images
from mltrain.export import export
from test_resume import wait_for_step

IMAGES = {"dataset": "image_folder", "image_size": 16, "batch_size": 6, "test_split": 0.0, "val_split": 0.25}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_images(root, 8, channels=3, size=16, seed=0)  # root/dark, root/light
    return root


def resnet18_file(path):
    torch.manual_seed(7)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return torch.load(path, weights_only=True)


def image_config(directory, name="run", **sections):
    """A config of `sections` alone (over the tiny base's seed and output), for the image tests."""
    return write_config(directory, name, replace=True, **sections)


def fit(directory, name="run", **sections):
    return mltrain.fit(image_config(directory, name, **sections) if "model" in sections
                       and "/" in sections["model"].get("arch", "") else write_config(directory, name, **sections))


def weights_of(run, name="last.pt"):
    return torch.load(run / "checkpoints" / name, weights_only=True)["model"]


def test_a_frozen_backbone_stays_as_loaded_then_trains_at_its_own_lr(images, tmp_path, monkeypatch):
    """One frozen epoch changes only the new classifier (batch-norm statistics included); after the
    thaw at epoch 2 the backbone trains too, at a tenth of the head's lr. Then the run needs its
    weights file no more."""
    loaded = resnet18_file(tmp_path / "resnet18.pth")
    sections = dict(data={**IMAGES, "root": str(images)},
                    model={"arch": "torchvision/resnet18", "weights": str(tmp_path / "resnet18.pth")},
                    optimizer={"name": "adamw", "lr": 0.01, "groups": [{"params": "backbone", "lr_scale": 0.1}]},
                    train={"epochs": 1, "freeze": ["backbone"], "unfreeze_at_epoch": 2, "log_every_steps": 1})
    result = fit(tmp_path, **sections)
    frozen = weights_of(result.run_dir)
    backbone = [name for name in loaded if not name.startswith("fc.")]
    assert all(torch.equal(frozen[name], loaded[name]) for name in backbone)  # running stats too
    assert "layer1.0.bn1.running_mean" in backbone and not torch.equal(frozen["fc.weight"], loaded["fc.weight"])
    checkpoint = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)
    assert set(checkpoint["backbone"]) == {name for name in backbone if name in dict(
        torchvision.models.resnet18().named_parameters())}

    resumed = mltrain.resume(result.run_dir, overrides=["train.epochs=2"])
    thawed = weights_of(resumed.run_dir)
    assert not torch.equal(thawed["layer1.0.conv1.weight"], loaded["layer1.0.conv1.weight"])
    assert not torch.equal(thawed["layer1.0.bn1.running_mean"], loaded["layer1.0.bn1.running_mean"])
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    assert all(record["lr/backbone"] == pytest.approx(0.1 * record["lr"]) for record in records)
    log = (result.run_dir / "train.log").read_text()
    assert "frozen until epoch 2: 60 parameter tensors" in log and "epoch 2: unfrozen" in log

    # eval, predict and export rebuild from the checkpoint, from elsewhere, with the weights file gone
    (tmp_path / "resnet18.pth").unlink()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert mltrain.evaluate(result.run_dir, split="val")["split"] == "val"
    assert mltrain.predict(result.run_dir, [images / "dark/0.png"])[0]["classes"][0] in ("dark", "light")
    assert export(result.run_dir, "onnx").path == result.run_dir / "export/best.onnx"


def test_a_timm_model_fine_tunes_from_safetensors_and_resumes_exactly_across_the_thaw(tmp_path):
    """A run killed (SIGKILL) in its frozen epoch and resumed ends bitwise equal to one never stopped."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(3)
    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "test_resnet.safetensors")
    root = tmp_path / "grey"
    write_images(root, 24, channels=1, size=16, seed=1)  # grey images: the RGB stem is adapted
    sections = dict(data={**IMAGES, "root": str(root), "batch_size": 8},
                    model={"arch": "timm/test_resnet", "weights": str(tmp_path / "test_resnet.safetensors")},
                    optimizer={"name": "adamw", "lr": 0.003, "groups": [{"params": "backbone", "lr_scale": 0.1}]},
                    train={"epochs": 4, "freeze": ["backbone"], "unfreeze_at_epoch": 2, "log_every_steps": 1,
                           "checkpoint_every_steps": 2, "threads": 1})  # the same float sums in both runs
    config = image_config(tmp_path, **sections)
    mltrain.fit(config, run_dir=tmp_path / "reference")
    log = (tmp_path / "reference" / "train.log").read_text()
    assert "kept 90 tensors" in log and "new: fc.weight (2, 96), fc.bias (2,)" in log

    run = tmp_path / "killed"
    process = subprocess.Popen([MLTRAIN, "fit", str(config), "--run-dir", str(run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(run, 3, process)  # in epoch 1 (5 steps), frozen
    process.kill()
    process.wait()
    resumed = subprocess.run([MLTRAIN, "fit", "--resume", str(run)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "epoch 2: unfrozen" in (run / "train.log").read_text()
    got, want = weights_of(run), weights_of(tmp_path / "reference")
    assert set(got) == set(want) and all(torch.equal(got[name], want[name]) for name in got)
    assert (run / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()


def test_a_warm_start_from_another_run_keeps_its_body_and_sizes_a_new_head(tmp_path):
    """Its best.pt's hidden layers are the new run's backbone; the output layer, sized to 4 classes
    instead of 3, starts fresh. (A step at lr 1e-12 leaves the loaded weights as they were.)"""
    first = fit(tmp_path, "first", data={"classes": 3}, model={"hidden": [16, 16]}, train={"epochs": 2})
    second = fit(tmp_path, "second", data={"classes": 4}, optimizer={"lr": 1e-12},
                 model={"hidden": [16, 16], "weights": str(first.run_dir)}, train={"epochs": 1, "max_steps": 1})
    assert "kept 4 tensors" in (second.run_dir / "train.log").read_text()
    before = weights_of(first.run_dir, "best.pt")
    after = torch.load(second.run_dir / "checkpoints/last.pt", weights_only=True)
    assert after["backbone"] == ["1.weight", "1.bias", "4.weight", "4.bias"]
    assert all(torch.allclose(after["model"][name], before[name], atol=1e-9) for name in after["backbone"])
    assert after["model"]["7.weight"].shape == (4, 16) and before["7.weight"].shape == (3, 16)


def test_a_warm_start_keeps_tied_weights(tmp_path):
    """A gpt's output layer shares the token embedding: loading one gpt run into another keeps
    both names, nothing is left unmatched."""
    text = tmp_path / "text.txt"
    text.write_text("the config names the data and the model. " * 40)
    gpt = {"arch": "gpt", "d_model": 16, "heads": 2, "layers": 1}
    data = {"dataset": "text", "path": str(text), "block_size": 8, "windows": 16, "batch_size": 8}
    first = mltrain.fit(write_config(tmp_path, "first", replace=True, data=data, model=gpt, train={"epochs": 1}))
    second = mltrain.fit(write_config(tmp_path, "second", replace=True, data=data, train={"epochs": 1},
                                      model={**gpt, "weights": str(first.run_dir)}))
    assert "new:" not in (second.run_dir / "train.log").read_text()
    assert "kept" in (second.run_dir / "train.log").read_text()


def test_published_weights_come_from_the_cache_with_their_normalisation(images, tmp_path, monkeypatch):
    """`weights: pretrained` reads torch's cache (TORCH_HOME), never the network when the file is
    there; data.normalize: auto then takes ImageNet's statistics."""
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    resnet18_file(cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    result = fit(tmp_path, data={**IMAGES, "root": str(images)}, train={"epochs": 1},
                 model={"arch": "torchvision/resnet18", "weights": "pretrained"})
    state = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)["data_state"]
    assert state["mean"] == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert state["std"] == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])


def _no_network(url, *args, **kwargs):
    raise urllib.error.URLError(f"no network here ({url})")


def run_cli(directory, *arguments):
    return subprocess.run([MLTRAIN, *map(str, arguments)], cwd=directory, capture_output=True, text=True)


def test_weights_that_cannot_be_used_are_one_line_each(images, tmp_path, monkeypatch):
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pth")
    planted = tmp_path / "planted"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(planted),))

    torch.save({"conv1.weight": torch.zeros(1), "extra": Payload()}, tmp_path / "code.pth")
    shutil.copy(tmp_path / "resnet34.pth", tmp_path / "broken.pth")
    (tmp_path / "broken.pth").write_bytes((tmp_path / "broken.pth").read_bytes()[:1000])
    base = dict(data={**IMAGES, "root": str(images)}, train={"epochs": 1})
    config = image_config(tmp_path, "code", **base, model={"arch": "torchvision/resnet18", "weights": "code.pth"})
    done = run_cli(tmp_path, "fit", config)
    assert done.returncode == 2 and "names posix.mkdir" in done.stderr and "could run code" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not planted.exists()
    assert not list((tmp_path / "runs").glob("*"))  # no run directory left behind
    (tmp_path / "notes.pt").write_text("epoch 3 was the best\n")
    for file, message in {"resnet34.pth": "match no parameter of torchvision/resnet18",
                          "broken.pth": "is not a weight file torch can read",
                          "notes.pt": "is not a weight file torch can read", "missing.pth": "does not exist"}.items():
        config = image_config(tmp_path, "bad", **base, model={"arch": "torchvision/resnet18", "weights": file})
        with pytest.raises(mltrain.errors.UserError, match=message):
            mltrain.fit(config)

    empty_cache = tmp_path / "no-cache"
    monkeypatch.setenv("TORCH_HOME", str(empty_cache))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    config = image_config(tmp_path, "offline", **base, model={"arch": "torchvision/resnet18", "weights": "pretrained"})
    with pytest.raises(mltrain.errors.UserError, match=r"resnet18-f37072fd.pth is not in torch's cache .* put it at "
                                                       + str(empty_cache)):
        mltrain.fit(config)
