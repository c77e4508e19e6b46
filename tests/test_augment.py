"""Batch augmentation of images: shapes, values, randomness per sample, on for training batches only,
and validated with the rest of the config."""

import pytest
import torch

from formats import source_config, write_mnist
from mltrain.config import load_config, section_config
from mltrain.data import build_data
from mltrain.data.augment import crop, cutout, flip, noise, rotate, translate
from mltrain.data.dataset import batches

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
CPU = torch.device("cpu")


def ramp_images(count=64, channels=3, size=16):
    """Distinct values everywhere, so any moved or dropped pixel shows."""
    return torch.linspace(-2, 2, count * channels * size * size).reshape(count, channels, size, size)


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("augment", [
    lambda x: crop(x, 4, generator()), lambda x: flip(x, generator()), lambda x: translate(x, 2, generator()),
    lambda x: rotate(x, 15, generator()), lambda x: cutout(x, 5, generator()),
])
def test_geometric_augmentations_keep_shape_and_value_range(augment):
    x = ramp_images()
    out = augment(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)  # zeros come in from outside
    assert low - 1e-5 <= float(out.min()) and float(out.max()) <= high + 1e-5
    changed = (out != x).flatten(1).any(dim=1)
    assert 0 < int(changed.sum())  # some samples change ...
    assert len({tuple(sample.flatten()[:50].tolist()) for sample in out - x}) > 2  # ... each in its own way


def test_flip_mirrors_about_half_and_crop_moves_whole_windows():
    x = ramp_images(count=200)
    flipped = flip(x, generator())
    mirrored = (flipped == x.flip(-1)).flatten(1).all(dim=1)
    assert torch.equal(flipped[~mirrored], x[~mirrored]) and 70 < int(mirrored.sum()) < 130
    cropped = crop(x, 2, generator())
    inner = cropped[:, :, 2:-2, 2:-2]  # always inside the original image: a shifted copy of it
    for sample, original in zip(inner[:10], x[:10]):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(sample, original[:, dy:dy + 12, dx:dx + 12])]
        assert found


def test_cutout_zeroes_at_most_a_square_and_noise_has_its_std():
    x = torch.ones(100, 1, 16, 16)
    zeroed = (cutout(x, 4, generator()) == 0).flatten(1).sum(dim=1)
    assert int(zeroed.max()) == 16 and int(zeroed.min()) >= 4  # clipped at the borders
    assert abs(float((noise(x, 0.5, generator()) - x).std()) - 0.5) < 0.01


def test_augmentation_draws_from_the_runs_generator_not_the_global_one():
    from mltrain.data.augment import Augment

    configs = section_config("data", dataset="mnist", augment=[{"name": "crop"}, {"name": "noise"}]).augment
    first, second = Augment(configs, seed=3, device=CPU), Augment(configs, seed=3, device=CPU)
    x = ramp_images()
    torch.manual_seed(0)
    a = first(x)
    torch.manual_seed(1)  # the global RNG moved: no effect
    assert torch.equal(a, second(x))
    state = first.state_dict()
    b = first(x)
    second.load_state_dict(state)
    assert torch.equal(b, second(x)) and not torch.equal(a, b)
    assert not torch.equal(Augment(configs, seed=4, device=CPU)(x), a)


def test_training_batches_are_augmented_and_evaluation_batches_are_not(tmp_path):
    write_mnist(tmp_path)
    plain = section_config("data", dataset="mnist", root=str(tmp_path))
    augmented = section_config("data", dataset="mnist", root=str(tmp_path), augment=[{"name": "crop", "padding": 3},
                                                                                   {"name": "flip"}])
    a, b = build_data(plain, 0, CPU), build_data(augmented, 0, CPU)
    (xa, ya), (xb, yb) = a.splits["train"], b.splits["train"]
    order = torch.arange(len(ya))
    first = torch.cat([x for x, _ in batches(xb, yb, 32, order)])
    assert first.shape == (len(ya), 1, 28, 28)
    assert not torch.equal(first, xa[order]) and not torch.equal(first, xb[order])  # fresh each time
    for split in ("val", "test"):
        assert torch.equal(a.splits[split][0][torch.arange(10)], b.splits[split][0][torch.arange(10)])
    tiny = b.subset("train", 8)  # what overfit-tiny and the loop's callers get as plain tensors
    assert tiny.splits["train"][0].shape == (8, 1, 28, 28)


def test_overfit_tiny_runs_without_augmentation(cli, tmp_path):
    write_mnist(tmp_path / "data")
    config = source_config(tmp_path, {"dataset": "mnist", "root": "data", "augment": [{"name": "noise", "std": 5.0}]},
                           train={"epochs": 1, "max_steps": 2})
    assert cli("fit", config, "--quiet").exit_code == 0
    report = cli("overfit-tiny", config, "--samples", "8", "--steps", "60", "--json")
    assert '"passed": true' in report.stdout, report.output


def config_error(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n" + "".join(f"  {key}: {value}\n" for key, value in data.items()))
    with pytest.raises(Exception) as raised:
        load_config(path)
    return str(raised.value)


def test_augment_is_validated_with_the_config(tmp_path):
    message = config_error(tmp_path, {"dataset": "mnist", "augment": "[{name: flipp}]"})
    assert f"{tmp_path / 'c.yaml'}:3" in message and "did you mean 'flip'" in message
    message = config_error(tmp_path, {"dataset": "mnist", "augment": "[{name: flip, padding: 2}]"})
    assert "augmentation 'flip' does not take this key" in message
    message = config_error(tmp_path, {"dataset": "mnist", "augment": "[{name: crop, padding: 0}]"})
    assert "data.augment[0].padding" in message and "at least 1" in message
    message = config_error(tmp_path, {"dataset": "spirals", "augment": "[{name: flip}]"})
    assert "dataset 'spirals' does not take this key" in message
    cfg = load_config(tmp_path / "c.yaml", ["data.dataset=cifar10", "data.augment=[{name: rotate}]"])
    assert [(item.name, item.degrees) for item in cfg.data.augment] == [("rotate", 10.0)]


def test_augment_list_is_the_same_after_a_dump(tmp_path):
    from mltrain.config import config_from_dict, config_to_dict

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  dataset: image_folder\n  augment: [{name: crop, padding: 2}, {name: noise}]\n")
    cfg = load_config(path)
    dumped = config_to_dict(cfg)["data"]["augment"]
    assert dumped == [{"name": "crop", "padding": 2}, {"name": "noise", "std": 0.05}]
    assert config_from_dict(config_to_dict(cfg)) == cfg
