"""Real data sources read from tiny files in their real formats: torchvision's sets, image folders,
CSV and npz; each bad-data case exits 2 naming the file and the problem."""

import json
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import only_run
from formats import source_config as write_config
from formats import write_cifar10, write_cifar100, write_mnist, write_svhn
from helpers import write_images, write_table
from mltrain.config import section_config
from mltrain.data import build_data
from mltrain.data.inputs import Inputs

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")  # torchvision 0.29
CPU = torch.device("cpu")
FEW_STEPS = {"epochs": 1, "max_steps": 3}


@pytest.fixture
def ignore_md5(monkeypatch):
    """Generated CIFAR/SVHN files cannot match the md5s of the published ones; torchvision's own
    check_integrity, minus the md5 comparison, still requires every file to be there."""
    from torchvision.datasets import cifar, svhn, utils

    exists_only = lambda fpath, md5=None: utils.check_integrity(fpath)  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists_only)
    monkeypatch.setattr(svhn, "check_integrity", exists_only)


def fit_ok(cli, path):
    result = cli("fit", path, "--quiet")
    assert result.exit_code == 0, result.output
    return only_run(path.parent)


def fails_with(cli, path, *needles):
    result = cli("fit", path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


# --- torchvision sets --------------------------------------------------------------------

def test_mnist_from_gzipped_idx_files_trains_and_evaluates(cli, tmp_path):
    write_mnist(tmp_path / "data", gzipped=True)
    config = write_config(tmp_path, {"dataset": "mnist", "root": "data", "batch_size": 16},
                          train=FEW_STEPS)
    run = fit_ok(cli, config)
    checkpoint = torch.load(run / "checkpoints/best.pt", weights_only=True)
    assert set(checkpoint["data_state"]) == {"mean", "std"} and len(checkpoint["data_state"]["mean"]) == 1
    result = cli("eval", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 40


def test_mnist_is_stored_as_uint8_and_normalised_per_batch(tmp_path):
    write_mnist(tmp_path, "FashionMNIST")
    data = build_data(section_config("data", dataset="fashion_mnist", root=str(tmp_path), val_split=0.25), 0, CPU)
    x, y = data.splits["train"]
    assert isinstance(x, Inputs) and x.stored.dtype == torch.uint8 and x.shape[1:] == (1, 28, 28)
    assert data.size("train") == 90 and data.size("val") == 30 and data.size("test") == 40
    assert torch.bincount(data.splits["val"][1]).tolist() == [3] * 10  # stratified
    batch = x[torch.arange(len(y))]
    assert batch.dtype == torch.float32
    assert abs(float(batch.mean())) < 1e-4 and abs(float(batch.std()) - 1) < 1e-2  # train statistics
    assert data.spec.class_names[0] == "T-shirt/top"
    assert data.describe() == "train class balance: " + ", ".join(f"{name} 9" for name in data.spec.class_names)


def test_cifar10_and_cifar100_pickled_batches(tmp_path, ignore_md5):
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    ten = build_data(section_config("data", dataset="cifar10", root=str(tmp_path), val_split=0.1), 0, CPU)
    assert ten.spec.sample_shape == (3, 32, 32) and ten.spec.class_names[-1] == "truck"
    assert ten.size("train") + ten.size("val") == 100 and ten.size("test") == 20
    assert len(ten.state["mean"]) == 3
    hundred = build_data(section_config("data", dataset="cifar100", root=str(tmp_path), val_split=0.0), 0, CPU)
    assert hundred.spec.num_classes == 100 and set(hundred.splits) == {"train", "test"}
    assert "100 classes, from 2 (class0) to 2 (class0) per class" in hundred.describe()


def test_cifar10_trains_with_augmentation(cli, tmp_path, ignore_md5):
    write_cifar10(tmp_path / "data")
    config = write_config(tmp_path, {"dataset": "cifar10", "root": "data", "batch_size": 16,
                                          "augment": [{"name": "crop", "padding": 4}, {"name": "flip"}]},
                          model={"arch": "cnn", "channels": [8]}, train=FEW_STEPS)
    fit_ok(cli, config)


def test_svhn_mat_files(tmp_path, ignore_md5):
    pytest.importorskip("scipy")
    write_svhn(tmp_path)
    data = build_data(section_config("data", dataset="svhn", root=str(tmp_path), val_split=0.0), 0, CPU)
    assert data.spec.sample_shape == (3, 32, 32) and data.size("train") == 60
    assert sorted(set(data.splits["train"][1].tolist())) == list(range(10))  # label 10 read as digit 0


def test_missing_files_name_the_directory_and_how_to_get_them(cli, tmp_path):
    config = write_config(tmp_path, {"dataset": "kmnist", "root": "nowhere"})
    fails_with(cli, config, str(tmp_path / "nowhere" / "KMNIST" / "raw"), "train-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte", "data.download: true", "copy the files")


def test_files_failing_the_md5_check_are_reported(cli, tmp_path):
    write_cifar10(tmp_path / "data")  # all present, but not the published bytes
    config = write_config(tmp_path, {"dataset": "cifar10", "root": "data"})
    fails_with(cli, config, "cifar-10-batches-py", "corrupt", "data.download: true")


def test_torchvision_is_not_imported_for_other_datasets(tmp_path):
    config = write_config(tmp_path, {"dataset": "digits"}, train=FEW_STEPS)
    code = ("import sys; from mltrain.config import load_config; from mltrain.fitting import fit; "
            f"cfg = load_config({str(config)!r}); fit(cfg, quiet=True); "
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- image folders ----------------------------------------------------------------------

def test_image_folder_of_pngs_and_jpegs_trains(cli, tmp_path):
    write_images(tmp_path / "pets" / "cat", 10, suffix=".png", shade=20)
    write_images(tmp_path / "pets" / "dog", 10, suffix=".jpg", shade=200)
    config = write_config(tmp_path, {"dataset": "image_folder", "root": "pets", "image_size": 8,
                                          "batch_size": 4, "test_split": 0.2, "val_split": 0.25,
                                          "augment": [{"name": "translate", "pixels": 1}]},
                          model={"arch": "cnn", "channels": [4]}, train=FEW_STEPS)
    run = fit_ok(cli, config)
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)["data_state"]
    assert state["classes"] == ["cat", "dog"]
    data = build_data(section_config("data", dataset="image_folder", root=str(tmp_path / "pets"), image_size=8), 0, CPU)
    assert data.spec.sample_shape == (3, 8, 8) and data.size("test") == 4


def test_image_folder_with_split_folders(tmp_path):
    for split, count in (("train", 8), ("val", 2), ("test", 3)):
        for shade, name in ((0, "a"), (255, "b")):
            write_images(tmp_path / split / name, count, channels=1, shade=shade)
    data = build_data(section_config("data", dataset="image_folder", root=str(tmp_path), image_size=6), 0, CPU)
    assert {name: data.size(name) for name in data.splits} == {"train": 16, "val": 4, "test": 6}
    assert data.spec.sample_shape == (1, 6, 6) and data.spec.class_names == ("a", "b")


def test_a_folder_above_max_memory_streams_from_disk_and_trains_alike(tmp_path):
    import mltrain
    from mltrain.data.streamed import StreamedSamples

    for shade, name in ((40, "cat"), (200, "dog")):
        write_images(tmp_path / "images" / name, 12, shade=shade)
    common = {"dataset": "image_folder", "root": "images", "image_size": 8, "batch_size": 4,
              "augment": [{"name": "flip"}, {"name": "noise", "std": 0.1}]}
    streamed = build_data(section_config("data", dataset="image_folder", root=str(tmp_path / "images"), image_size=8,
                                     max_memory_mb=0, workers=2), 0, CPU)
    assert isinstance(streamed.splits["train"][0], StreamedSamples)
    results = [mltrain.fit(write_config(tmp_path, {**common, **extra}, name=name, train={"epochs": 2}))
               for name, extra in (("memory", {}), ("disk", {"max_memory_mb": 0, "workers": 2}))]
    assert not multiprocessing.active_children()  # the decoding workers ended with the run, not at some GC
    in_memory, from_disk = (r.summary["final"] for r in results)
    assert from_disk["val/loss"] == pytest.approx(in_memory["val/loss"], rel=1e-4)
    assert from_disk["train/loss"] == pytest.approx(in_memory["train/loss"], rel=1e-4)
    assert mltrain.evaluate(results[1].run_dir)["metrics"]["test/loss"] == pytest.approx(
        results[1].summary["test"]["test/loss"], rel=1e-5)


@pytest.mark.parametrize("problem", ["mixed channels", "empty class", "unreadable", "one class"])
def test_bad_image_folders(cli, tmp_path, problem):
    root = tmp_path / "images"
    write_images(root / "cat", 3)
    if problem != "one class":
        write_images(root / "dog", 3, channels=1 if problem == "mixed channels" else 3)
    if problem == "empty class":
        (root / "bird").mkdir()
        (root / "bird" / "notes.txt").write_text("no images here")
    if problem == "unreadable":
        (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    data = {"dataset": "image_folder", "root": "images", "image_size": 8}
    expected = {
        "mixed channels": ["different channel counts", str(root / "cat" / "0.png"), str(root / "dog" / "0.png")],
        "empty class": [str(root / "bird"), "has no images"],
        "unreadable": [str(root / "dog" / "broken.png"), "cannot decode"],
        "one class": ["found 1 class folder"],
    }[problem]
    fails_with(cli, write_config(tmp_path, data), *expected)


# --- csv ----------------------------------------------------------------------------------

@pytest.mark.parametrize("table, target, needles", [
    ("size,kind\n1,a\n2,b\n3,a\n4,b\n", {"target": "kind", "features": ["size", "wieght"]},
     ["data.features 'wieght'", "has no such column; columns: size, kind"]),
    ("size,kind\n1,2.5\ninf,3.5\n3,1.5\n4,2.5\n", {"target": "kind"}, [":3", "column 'size' is not finite"]),
    ("size,kind\n1,2.5\n,3.5\n3,1.5\n4,2.5\n", {"target": "kind"}, ["1 empty feature cell", ":3 column 'size'",
                                                                      "data.missing: fill"]),
    ("size,kind\n1,a\n2,b,7\n3,a\n", {"target": "kind"}, [":3", "3 values, but the header has 2 columns"]),
])
def test_bad_csv_files(cli, tmp_path, table, target, needles):
    (tmp_path / "t.csv").write_text(table)
    regression = {"arch": "mlp", "head": "linear"} if "2.5" in table else None
    config = write_config(tmp_path, {"dataset": "csv", "path": "t.csv", "val_split": 0.0, "test_split": 0.0,
                                     **target}, regression)
    fails_with(cli, config, str(tmp_path / "t.csv"), *needles)


def test_csv_classification_with_categorical_columns(cli, tmp_path):
    write_table(tmp_path / "table.csv")
    config = write_config(tmp_path, {"dataset": "csv", "path": "table.csv", "target": "kind",
                                          "batch_size": 8}, train=FEW_STEPS)
    run = fit_ok(cli, config)
    state = torch.load(run / "checkpoints/best.pt", weights_only=True)["data_state"]
    assert state["class_names"] == ["big", "small"]
    assert [column["name"] for column in state["columns"]] == ["size", "colour", "weight"]
    assert state["columns"][1]["categories"] == ["blue", "green", "red"]
    assert cli("eval", run, "--split", "val").exit_code == 0
    data = build_data(section_config("data", dataset="csv", path=str(tmp_path / "table.csv"), target="kind",
                                 task="classification", limit=10), 0, CPU)
    assert data.spec.sample_shape == (5,) and data.size("train") == 10  # 2 numbers + 3 one-hot colours
    x = data.splits["train"][0]
    assert x[:, 1:4].sum(dim=1).eq(1).all()


def test_csv_regression_with_a_linear_head(cli, tmp_path):
    write_table(tmp_path / "table.csv")
    config = write_config(tmp_path, {"dataset": "csv", "path": "table.csv", "target": "weight",
                                          "features": ["size"]}, model={"head": "linear"}, train=FEW_STEPS)
    fit_ok(cli, config)
    resolved = cli("config", config).stdout
    assert "task: regression" in resolved


def test_a_quantity_is_not_guessed_into_classes_but_explicit_class_ids_are_kept(cli, tmp_path):
    write_table(tmp_path / "table.csv")  # weight: 60 distinct decimals
    config = write_config(tmp_path, {"dataset": "csv", "path": "table.csv", "target": "weight",
                                     "features": ["size"]}, train=FEW_STEPS)
    guessed = cli("fit", config, "--quiet")
    assert guessed.exit_code == 2
    assert "data.target 'weight'" in guessed.output and "60 distinct numbers" in guessed.output
    assert "model.head: linear" in guessed.output and "data.task: classification" in guessed.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    explicit = cli("fit", config, "--quiet", "--set", "data.task=classification")
    assert explicit.exit_code == 0, explicit.output
    classes = torch.load(only_run(tmp_path) / "checkpoints/best.pt", weights_only=True)["data_state"]["class_names"]
    assert len(classes) == 60


@pytest.mark.parametrize("targets, shown", [
    ([str(i % 60) for i in range(120)], "60 distinct numbers there (0, 1, 2, ..., 59)"),  # too many to be ids
    (["0.5", "1.5", "2.5"] * 20, "3 distinct numbers there (0.5, 1.5, 2.5)"),  # fractions
])
def test_each_sign_of_a_quantity_is_enough_to_refuse_the_guess(cli, tmp_path, targets, shown):
    rows = ["x,y"] + [f"{i / 10},{target}" for i, target in enumerate(targets)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    result = cli("fit", write_config(tmp_path, {"dataset": "csv", "path": "t.csv", "target": "y"}, train=FEW_STEPS))
    assert result.exit_code == 2 and shown in result.stderr


@pytest.mark.parametrize("cell, problem", [("", "is empty there"), ("nan", "is empty there")])
def test_a_missing_class_label_names_its_row(cli, tmp_path, cell, problem):
    rows = ["x,y"] + [f"{i},{cell if i == 7 else i % 2}" for i in range(20)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    result = cli("fit", write_config(tmp_path, {"dataset": "csv", "path": "t.csv", "target": "y"}, train=FEW_STEPS))
    assert result.exit_code == 2 and f"t.csv:9: column 'y' {problem}" in result.stderr


def test_a_few_whole_numbers_are_still_guessed_to_be_classes(cli, tmp_path):
    rows = ["x,grade"] + [f"{i / 10},{i % 3 + 1}" for i in range(60)]
    (tmp_path / "grades.csv").write_text("\n".join(rows) + "\n")
    config = write_config(tmp_path, {"dataset": "csv", "path": "grades.csv", "target": "grade"}, train=FEW_STEPS)
    state = torch.load(fit_ok(cli, config) / "checkpoints/best.pt", weights_only=True)["data_state"]
    assert state["class_names"] == ["1", "2", "3"]


def test_csv_unknown_target_suggests_the_closest_column(cli, tmp_path):
    write_table(tmp_path / "table.csv")
    config = write_config(tmp_path, {"dataset": "csv", "path": "table.csv", "target": "knd"})
    fails_with(cli, config, "data.target 'knd'", str(tmp_path / "table.csv"), "did you mean 'kind'")


def test_csv_nan_feature_names_file_column_and_row(cli, tmp_path):
    write_table(tmp_path / "table.csv", bad_row=7)
    config = write_config(tmp_path, {"dataset": "csv", "path": "table.csv", "target": "kind"})
    fails_with(cli, config, f"{tmp_path / 'table.csv'}:9 column 'weight'", "1 empty feature cell")  # nan: empty


# --- npz ----------------------------------------------------------------------------------

def write_npz(path, **arrays):
    rng = np.random.default_rng(0)
    y = np.arange(80) % 4
    defaults = {"x_train": (rng.normal(size=(80, 6)) + y[:, None]).astype(np.float32), "y_train": y}
    np.savez(path, **{**defaults, **arrays})
    return path


def test_npz_with_its_own_test_split_trains(cli, tmp_path):
    write_npz(tmp_path / "arrays.npz", x_test=np.zeros((8, 6), np.float32), y_test=np.arange(8) % 4)
    config = write_config(tmp_path, {"dataset": "npz", "path": "arrays.npz", "val_split": 0.25},
                          train=FEW_STEPS)
    fit_ok(cli, config)
    data = build_data(section_config("data", dataset="npz", path=str(tmp_path / "arrays.npz"), task="classification",
                                 val_split=0.25), 0, CPU)
    assert {name: data.size(name) for name in data.splits} == {"train": 60, "val": 20, "test": 8}
    assert data.spec.num_classes == 4


@pytest.mark.parametrize("arrays, needles", [
    ({"y_train": None}, ["no array 'y_train'", "arrays present: x_train"]),
    ({"x_val": np.zeros((4, 6))}, ["no array 'y_val'"]),
    ({"x_test": np.zeros((2, 6)), "y_test": np.array([0, 4])}, ["y_test has class id 4, out of range"]),
    ({"y_train": np.r_[-1, np.arange(79) % 4]}, ["y_train has a negative class id"]),
    ({"y_train": np.linspace(0, 1, 80)}, ["y_train holds float64", "model.head: linear"]),
    ({"x_train": np.full((80, 6), np.inf)}, ["x_train has a NaN or inf at index (0, 0)"]),
    ({"x_train": np.r_[np.zeros((5, 6)), np.full((1, 6), np.nan), np.zeros((74, 6))]},
     ["x_train has a NaN or inf at index (5, 0)"]),
    ({"y_train": np.arange(79) % 4}, ["x_train has 80 samples but y_train has 79"]),
    ({"y_train": np.full(80, 2)}, ["every y_train is class 2", "at least 2 classes"]),
])
def test_bad_npz_files(cli, tmp_path, arrays, needles):
    path = tmp_path / "arrays.npz"
    rng = np.random.default_rng(0)
    written = {"x_train": rng.normal(size=(80, 6)), "y_train": np.arange(80) % 4, **arrays}
    np.savez(path, **{name: array for name, array in written.items() if array is not None})
    fails_with(cli, write_config(tmp_path, {"dataset": "npz", "path": "arrays.npz"}), str(path), *needles)


def test_missing_csv_and_npz_files(cli, tmp_path):
    for dataset, extra in (("csv", {"target": "y"}), ("npz", {})):
        config = write_config(tmp_path, {"dataset": dataset, "path": "absent.file", **extra})
        fails_with(cli, config, str(tmp_path / "absent.file"), "no such file")


def test_a_broken_image_met_while_streaming_is_one_clear_error(cli, tmp_path):
    """The broken file is in the val split, which setup never decodes (the channel statistics come
    from train images): only a DataLoader worker meets it, during the first validation."""
    for split in ("train", "val"):
        for shade, name in ((40, "cat"), (200, "dog")):
            write_images(tmp_path / "images" / split / name, 6, shade=shade)
    (tmp_path / "images" / "val" / "dog" / "9.png").write_bytes(b"not a png")
    config = write_config(tmp_path, {"dataset": "image_folder", "root": "images", "image_size": 8,
                                     "max_memory_mb": 0, "workers": 1, "test_split": 0.0},
                          train={"epochs": 1})
    result = cli("fit", config)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: data.root: cannot decode image") and "9.png" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["status"] == "failed" and "cannot decode image" in summary["error"]


def test_npz_target_and_sample_shapes(cli, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    cases = {"column": ({"x_train": x, "y_train": (x[:, :1] > 0).astype(np.int64)}, None),  # (N, 1) ids
             "pairs": ({"x_train": x, "y_train": x[:, :2] * 2}, {"arch": "mlp", "head": "linear"})}  # 2 targets
    for name, (arrays, model) in cases.items():
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "data.npz", **arrays)
        run = fit_ok(cli, write_config(tmp_path / name, {"dataset": "npz", "path": "data.npz"}, model, train=FEW_STEPS))
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
        final = json.loads((run / "summary.json").read_text())["final"]
        assert ("val/accuracy" in final) == (model is None)  # class ids were read as classes, pairs as targets
    np.savez(tmp_path / "flat.npz", x_train=x[:, 0], y_train=np.zeros(60, dtype=np.int64))
    fails_with(cli, write_config(tmp_path, {"dataset": "npz", "path": "flat.npz"}), "flat.npz", "x_train is shaped (60,)")


def test_streamed_and_augmented_batches_are_decoded_by_the_workers(tmp_path, monkeypatch):
    import os

    from mltrain.data.dataset import batches
    from mltrain.data.orders import epoch_order
    from mltrain.data.streamed import ImageFiles, StreamedSamples

    for shade, name in ((40, "cat"), (200, "dog")):
        write_images(tmp_path / "images" / name, 12, shade=shade)
    data = build_data(section_config("data", dataset="image_folder", root=str(tmp_path / "images"), image_size=8,
                                     max_memory_mb=0, workers=2, augment=[{"name": "flip"}]), 0, CPU)
    x, y = data.splits["train"]
    assert isinstance(x, StreamedSamples) and x.augment is not None  # augmentation did not unwrap the stream
    decoded_by = tmp_path / "pids"
    original = ImageFiles.__getitem__

    def recording(self, index):
        with open(decoded_by, "a") as file:
            file.write(f"{os.getpid()}\n")
        return original(self, index)

    monkeypatch.setattr(ImageFiles, "__getitem__", recording)
    seen = [len(xb) for xb, _ in batches(x, y, 4, epoch_order(len(y), 0, 1))]
    assert sum(seen) == len(y)
    pids = set(decoded_by.read_text().split())
    assert pids and str(os.getpid()) not in pids  # every image was decoded in a worker process
