"""Every architecture on every sample shape it accepts: output shape, gradients, learning;
every activation; the sample-shape rules of the contract; impossible pairings."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import mltrain
from mltrain.config import section_config
from mltrain.data import DataSpec
from mltrain.models import build_model
from mltrain.models.layers import as_steps, steps_and_features
from mltrain.models.recurrent import GRU
from mltrain.models.resnet import resnet18
from mltrain.registry import ACTIVATIONS, ARCHITECTURES, IMAGE, SEQUENCE, VECTOR

SHAPES = {IMAGE: [(1, 8, 8), (3, 6, 10)], SEQUENCE: [(12,), (12, 3)], VECTOR: [(2,)]}
SMALL = {  # keep every model tiny: these tests run on 2 CPU cores
    "mlp": {"hidden": (16,)},
    "cnn": {"channels": (8, 16), "norm": "batch"},
    "rnn": {"hidden_size": 16},
    "lstm": {"hidden_size": 16, "bidirectional": True},
    "gru": {"hidden_size": 16, "readout": "mean"},
    "transformer": {"d_model": 16, "heads": 2, "layers": 1},
}
# (steps, Adam lr) of the short fit; the resnets (11 and 21 M parameters) fit in a few slow steps
FIT = {"resnet18": (8, 1e-3), "resnet34": (8, 1e-3)}
CLASSES = 3
CASES = [(entry.name, shape) for entry in ARCHITECTURES for kind in (IMAGE, SEQUENCE, VECTOR)
         if kind in entry.tags for shape in SHAPES[kind]]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread, as `fit` picks on 2 cores: spinning threads crawl when another
    process holds the second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(arch: str, shape: tuple[int, ...], **params) -> nn.Module:
    torch.manual_seed(0)
    relu = {"activation": "relu"} if "activation" in ARCHITECTURES[arch].keys else {}
    cfg = section_config("model", arch=arch, **{**relu, **SMALL.get(arch, {}), **params})
    return build_model(cfg, DataSpec(shape, CLASSES), CLASSES)


def batch(shape: tuple[int, ...], size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise around a mean of y in every element: learnable by any architecture."""
    generator = torch.Generator().manual_seed(1)
    y = torch.arange(size) % CLASSES
    x = torch.randn(size, *shape, generator=generator) + y.view(-1, *[1] * len(shape))
    return x, y


def write_model_config(directory: Path, dataset: str, **model) -> Path:
    """A fast config for `dataset` whose model section is exactly `model`."""
    data = {"dataset": dataset, "batch_size": 32, **({"length": 4, "samples": 400} if dataset == "parity" else {})}
    model = {key: list(value) if isinstance(value, tuple) else value for key, value in model.items()}
    config = {"seed": 0, "data": data, "model": model, "train": {"epochs": 3},
              "output": {"dir": str(directory / "runs")}}
    path = directory / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def case_id(case):
    arch, shape = case
    return f"{arch}-{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("arch, shape", CASES, ids=map(case_id, CASES))
def test_forward_shape_and_every_parameter_gets_a_gradient(arch, shape):
    model = make(arch, shape)
    x, y = batch(shape, size=4)
    logits = model(x)
    assert logits.shape == (4, CLASSES)
    nn.functional.cross_entropy(logits, y).backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


@pytest.mark.parametrize("arch, shape", CASES, ids=map(case_id, CASES))
def test_a_short_fit_lowers_the_loss(arch, shape):
    model = make(arch, shape)
    x, y = batch(shape)
    steps, lr = FIT.get(arch, (30, 1e-2))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


ACTIVATION_ARCHS = [entry.name for entry in ARCHITECTURES if "activation" in entry.keys and IMAGE in entry.tags]


@pytest.mark.parametrize("arch", ACTIVATION_ARCHS)
def test_every_activation_is_used_and_trains(arch):
    for name in ACTIVATIONS.names():
        model = make(arch, (1, 8, 8), activation=name)
        kinds = {type(module) for module in model.modules()}
        assert ACTIVATIONS[name].factory in kinds, name
        assert name == "relu" or nn.ReLU not in kinds, name  # resnet's own ReLUs are all replaced
        x, y = batch((1, 8, 8), size=4)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()), name


def test_sequence_models_read_samples_as_the_contract_says():
    assert steps_and_features((40,)) == (40, 1)
    assert steps_and_features((40, 5)) == (40, 5)
    assert steps_and_features((3, 8, 6)) == (8, 18)  # H rows of C*W features
    image = torch.randn(2, 3, 8, 6)
    steps = as_steps(image)
    assert steps.shape == (2, 8, 18)
    assert torch.equal(steps[:, 5], image[:, :, 5, :].flatten(1))  # step 5 is row 5 of every channel
    assert torch.equal(as_steps(torch.arange(6.0).view(2, 3)), torch.arange(6.0).view(2, 3, 1))


def test_bidirectional_last_readout_joins_forward_final_and_backward_first():
    model = GRU((7, 2), 3, hidden_size=5, layers=2, bidirectional=True, dropout=0.0, readout="last").eval()
    seen = []
    model.output.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    x = torch.randn(4, 7, 2)
    model(x)
    _, final = model.rnn(x)  # (layers * 2, B, hidden): the last layer's forward, then backward state
    assert torch.allclose(seen[0], torch.cat([final[-2], final[-1]], dim=-1), atol=1e-6)


def test_cnn_fits_any_size_and_never_pools_a_side_below_1():
    for shape in ((1, 2, 9), (3, 1, 1), (1,), (2, 1000)):
        model = make("cnn", shape, channels=(4,) * 6)
        assert model(torch.randn(2, *shape)).shape == (2, CLASSES)
    pools = [m for m in make("cnn", (1, 2, 9), channels=(4,) * 6).modules() if isinstance(m, nn.MaxPool2d)]
    assert [pool.kernel_size for pool in pools] == [(2, 2), (1, 2), (1, 2)]  # 2x9 -> 1x4 -> 1x2 -> 1x1


def test_resnet_stem_follows_the_image_size_and_channels():
    small = resnet18((1, 32, 32), 10, small_input=None, activation="relu")
    assert small.conv1.in_channels == 1 and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, nn.Identity)
    large = resnet18((3, 64, 64), 10, small_input=None, activation="relu")
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)
    assert resnet18((3, 64, 64), 10, small_input=True, activation="relu").conv1.kernel_size == (3, 3)


def test_transformer_patches_and_pooling():
    patches = make("transformer", (3, 8, 6), patch_size=2, pooling="cls")
    assert patches.positions.shape == (1, 4 * 3 + 1, 16)  # 12 patches and the class token
    rows = make("transformer", (3, 8, 6), patch_size=0, pooling="mean", positions="sinusoidal")
    assert rows.positions.shape == (1, 8, 16) and not any(p is rows.positions for p in rows.parameters())
    assert rows(torch.randn(2, 3, 8, 6)).shape == (2, CLASSES)


def test_torchvision_is_imported_only_for_resnets():
    code = ("import sys, torch; from mltrain.config import section_config; from mltrain.data import DataSpec; "
            "from mltrain.models import build_model; "
            "[build_model(section_config('model', arch=a), DataSpec((1, 8, 8), 10), 10) for a in "
            "('mlp', 'cnn', 'rnn', 'lstm', 'gru', 'transformer')]; "
            "assert 'torchvision' not in sys.modules; "
            "build_model(section_config('model', arch='resnet18'), DataSpec((1, 8, 8), 10), 10); "
            "assert 'torchvision' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("arch, dataset, fitting", [
    ("cnn", "spirals", "mlp"),
    ("transformer", "spirals", "mlp"),
    ("lstm", "spirals", "mlp"),
    ("resnet18", "parity", "mlp, cnn, rnn, lstm, gru, transformer"),
])
def test_impossible_pairings_exit_2_saying_what_fits(cli, tmp_path, arch, dataset, fitting):
    result = cli("config", write_model_config(tmp_path, dataset, arch=arch))
    assert result.exit_code == 2
    assert f"arch '{arch}' cannot read dataset '{dataset}'" in result.stderr
    assert f"architectures that fit: {fitting}" in result.stderr


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "rnn", "lstm", "gru", "transformer"])
def test_each_arch_configures_on_digits_with_only_its_keys(cli, tmp_path, arch):
    result = cli("config", write_model_config(tmp_path, "digits", arch=arch))
    assert result.exit_code == 0, result.output
    shared = {"arch", "head", "weights", "weights_strict"}  # every architecture's
    assert set(yaml.safe_load(result.stdout)["model"]) == {*shared, *ARCHITECTURES[arch].keys}


def test_heads_must_divide_d_model(cli, tmp_path):
    result = cli("config", write_model_config(tmp_path, "digits", arch="transformer", d_model=30, heads=4))
    assert result.exit_code == 2 and "model.heads" in result.stderr and "d_model 30" in result.stderr


def test_group_norm_works_for_mlp_and_cnn_and_typos_are_named(cli, tmp_path):
    for arch in ("mlp", "cnn"):
        ok = cli("config", write_model_config(tmp_path, "digits", arch=arch, norm="group"))
        assert ok.exit_code == 0 and "norm: group" in ok.stdout
        assert any(isinstance(m, nn.GroupNorm) for m in make(arch, (1, 8, 8), norm="group").modules())
    bad = cli("config", write_model_config(tmp_path, "digits", arch="cnn", pool="maxx"))
    assert bad.exit_code == 2 and "model.pool" in bad.stderr and "did you mean 'max'" in bad.stderr


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_norm_none_is_no_layer_and_the_weights_keep_their_names(arch):
    """No module call for a norm that does nothing, yet every other layer's weights are named as
    with a norm, and as in checkpoints from when norm none was an Identity (so they still load)."""
    plain, normed = make(arch, (1, 8, 8), norm="none"), make(arch, (1, 8, 8), norm="layer")
    assert not any(isinstance(m, nn.Identity) for m in plain.modules())
    assert set(plain.state_dict()) < set(normed.state_dict())
    after_the_norm = "4.weight" if arch == "mlp" else "features.4.weight"  # its place as with an Identity there
    assert after_the_norm in plain.state_dict()


@pytest.mark.parametrize("set_, key", [("model.patch_size=16", "model.patch_size"),
                                       ("model.kernel_size=9", "model.kernel_size")])
def test_sizes_too_large_for_the_images_exit_2(cli, tmp_path, set_, key):
    arch = "transformer" if "patch" in set_ else "cnn"
    padding = {} if arch == "transformer" else {"padding": 0}
    result = cli("fit", write_model_config(tmp_path, "digits", arch=arch, **padding), "--set", set_)
    assert result.exit_code == 2 and key in result.stderr and "8x8" in result.stderr


@pytest.mark.parametrize("arch", ["cnn", "gru", "transformer"])
def test_sequence_archs_train_on_a_sequence_dataset_end_to_end(tmp_path, arch):
    summary = mltrain.fit(write_model_config(tmp_path, "parity", arch=arch, **SMALL[arch])).summary
    assert summary["status"] == "completed" and "test/accuracy" in summary["test"]


def test_the_cnn_reads_out_by_average_or_flattened_with_dense_layers():
    from mltrain.errors import UserError
    from mltrain.models.cnn import CNN

    keys = dict(kernel_size=3, stride=1, padding=0, norm="none", activation="relu", dropout=0.0)
    flat = CNN((1, 12, 12), 4, (8, 16), pool=("none", "max"), readout="flatten", dense=(32,), **keys)
    assert flat(torch.zeros(5, 1, 12, 12)).shape == (5, 4)
    assert flat.dense[0].in_features == 16 * 4 * 4  # 12 -> 10 -> 8, pooled to 4x4
    average = CNN((20,), 3, (8,), pool="max", readout="avg", dense=(), **keys)  # a 1-D signal
    assert average(torch.zeros(2, 20)).shape == (2, 3) and average.output.in_features == 8
    with pytest.raises(UserError, match="model.pool: 1 entries for 2 conv blocks"):
        CNN((1, 12, 12), 4, (8, 16), pool=("max",), **keys)
    with pytest.raises(UserError, match=r"model.readout flatten: samples of \(3, 512, 512\)"):
        CNN((3, 512, 512), 4, (32,), pool="none", readout="flatten", **keys)


def test_a_flatten_readout_trains_resumes_and_exports(tmp_path):
    from mltrain.export import export

    config = write_model_config(tmp_path, "digits", arch="cnn", channels=[8, 16], padding=0, pool=["none", "max"],
                                readout="flatten", dense=[16], dropout=0.1)
    result = mltrain.fit(config, overrides=["train.epochs=1"])
    resumed = mltrain.resume(result.run_dir, overrides=["train.epochs=2"])
    assert resumed.summary["epochs_completed"] == 2
    assert export(result.run_dir, "pt2").max_abs_diff <= 1e-4


def test_a_cnn_checkpoint_from_before_the_readout_key_keeps_its_average(tmp_path):
    """Checkpoints written before model.readout (whose default is now flatten) stored no readout:
    they were trained with the average over positions and still evaluate as such."""
    config = write_model_config(tmp_path, "digits", arch="cnn", channels=[8], readout="avg")
    run = mltrain.fit(config, overrides=["train.epochs=1"]).run_dir
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(run / "checkpoints" / name, weights_only=True)
        del checkpoint["config"]["model"]["readout"]
        torch.save(checkpoint, run / "checkpoints" / name)
    assert mltrain.evaluate(run)["split"] == "test"


def test_a_stored_config_without_readout_reads_as_the_average_a_users_as_the_default(tmp_path):
    """A run's config.yaml or a study's base config from before model.readout means avg; a config
    the user writes gets today's default."""
    from mltrain.config import load_config
    from mltrain.registry import from_stored

    path = write_model_config(tmp_path, "digits", arch="cnn", channels=[8])
    with from_stored():
        assert load_config(path).model.readout == "avg"
    assert load_config(path).model.readout == "flatten"
