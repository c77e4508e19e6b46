"""Hostile and odd input, one class each: refused with exit 2 and one line, quickly, with nothing
run and nothing left behind."""

import os
import subprocess
import time
import zipfile

import numpy as np
import pytest
import yaml

from conftest import MLTRAIN
from helpers import write_config

BARE = {"train": {"epochs": 1}}  # with the data (and model) each test gives: mltrain's defaults for the rest


def mltrain(*args, env=None, timeout=60):
    started = time.monotonic()
    result = subprocess.run([MLTRAIN, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def refused(*args, needle, env=None):
    result, seconds = mltrain(*args, env=env)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return seconds


def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")  # 10^9 values once expanded, from under 1 KB
    assert bomb.stat().st_size < 1000
    assert refused("config", bomb, needle="expands to more than") < 10


def test_deep_nesting_is_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 500 + "]" * 500 + "\n")
    refused("config", deep, needle="nested more than")


@pytest.mark.parametrize("where", ["config", "data.path"])
def test_files_that_are_not_regular_files_are_refused(tmp_path, where):
    if where == "config":
        refused("config", "/dev/zero", needle="not a regular file")
    else:
        config = write_config(tmp_path, base=BARE, data={"dataset": "csv", "path": "/dev/zero", "target": "y"})
        refused("fit", config, needle="data.path /dev/zero: not a regular file")
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_npz_decompression_bomb_is_measured_not_loaded(tmp_path):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                          "shape": (1_000_000, 1024, 1024)})  # 4 TB declared
            member.write(bytes(1 << 16))
        with archive.open("y_train.npy", "w") as member:
            np.save(member, np.zeros(4, dtype=np.int64))
    config = write_config(tmp_path, base=BARE, data={"dataset": "npz", "path": str(bomb)})
    assert refused("fit", config, needle="GiB once loaded") < 20


def test_image_whose_header_declares_too_many_pixels_is_not_decoded(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), color=index * 40).save(tmp_path / "images" / name / f"{index}.png")
    huge = tmp_path / "images" / "a" / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 1-bit and blank: a small file, 400M pixels declared
    assert huge.stat().st_size < 2_000_000
    config = write_config(tmp_path, base=BARE, data={"dataset": "image_folder", "root": str(tmp_path / "images"),
                                                     "image_size": 8}, model={"arch": "mlp"})
    refused("fit", config, needle="declares 20000x20000 pixels")


def test_csv_with_repeated_column_names_or_one_class_is_refused(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,a,y\n1,2,x\n3,4,z\n")
    config = write_config(tmp_path, base=BARE, data={"dataset": "csv", "path": str(table), "target": "y"})
    refused("fit", config, needle="'a' appear more than once")
    table.write_text("a,b,y\n" + "".join(f"{i},{i * 2},same\n" for i in range(20)))
    refused("fit", config, needle="classification needs at least 2 classes")


@pytest.mark.parametrize("args, needle", [
    (["sample", "run", "--prompt", "a", "--tokens", "-5"], "Invalid value for '--tokens'"),
    (["overfit-tiny", "c.yaml", "--steps", "0"], "Invalid value for '--steps'"),
    (["fit", "--bogus"], "No such option: --bogus"),
])
def test_bad_flags_are_one_line_not_a_usage_box(args, needle):
    refused(*args, needle=needle)


def test_debug_adds_the_traceback_but_keeps_the_exit_code(tmp_path):
    result, _ = mltrain("config", tmp_path / "missing.yaml", env={"MLTRAIN_DEBUG": "1"})
    assert result.returncode == 2
    assert "Traceback" in result.stderr and result.stderr.strip().endswith(f"config file not found: "
                                                                           f"{tmp_path / 'missing.yaml'}")


@pytest.mark.parametrize("key, value, needle", [
    ("seed", 2**32, "must be below 4294967296"),
    ("seed", -1, "must be 0 or more"),
])
def test_out_of_range_numbers_name_the_range(tmp_path, key, value, needle):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({key: value}))
    refused("config", path, needle=needle)


def test_a_bad_csv_value_is_located_without_echoing_the_file(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,y\n1,2.5\n3,SECRET-TOKEN-1234567890\n5,6.5\n7,8.5\n")
    config = write_config(tmp_path, base=BARE, data={"dataset": "csv", "path": str(table), "target": "y",
                                                     "val_split": 0.0, "test_split": 0.0},
                          model={"arch": "mlp", "head": "linear"})
    result, _ = mltrain("fit", config)
    assert result.returncode == 2 and f"{table}:3" in result.stderr and "SECRET" not in result.stderr


def test_a_linear_head_on_text_labels_blames_the_head(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("a,y\n1,cat\n2,dog\n3,cat\n4,dog\n")
    config = write_config(tmp_path, base=BARE, data={"dataset": "csv", "path": str(table), "target": "y"},
                          model={"arch": "mlp", "head": "linear"})
    refused("fit", config, needle="the head is the problem")


def test_an_image_whose_header_cannot_be_read_is_refused_not_decoded(tmp_path):
    """A PNG declaring 20000x20000 with a header Pillow refuses (its IHDR checksum is wrong): its size
    cannot be checked, so it is never handed to a decoder that might expand it."""
    import struct
    import zlib

    from mltrain.data.files import check_image_header
    from mltrain.errors import UserError

    def chunk(kind, data, crc=None):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)
                                                                          if crc is None else crc)

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0), 0)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(UserError, match=f"input: cannot decode image {bomb}: its header cannot be read"):
        check_image_header(bomb, "input")


def test_set_nested_too_deep_is_one_line(cli, tmp_path):
    result = cli("config", write_config(tmp_path), "--set", "model.hidden=" + "[" * 600 + "]" * 600)
    assert result.exit_code == 2 and "--set model.hidden" in result.output and "nested more than" in result.output


@pytest.mark.parametrize("spec, message", [
    ({"sample_shape": [100_000, 100_000]}, "sample_shape [100000, 100000] holds more than"),
    ({"sample_shape": [1 << 25]}, "build a model of"),  # within the bound: 2^25 x 32 weights, 4 GiB
    ({"num_classes": 1 << 25, "class_names": []}, "build a model of"),
], ids=["beyond-the-bound", "wide-input", "many-classes"])
def test_a_checkpoint_asking_for_a_huge_model_is_refused_before_it_is_built(cli, tmp_path, spec, message):
    import torch

    import mltrain

    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1}), quiet=True).run_dir
    for checkpoint in (run / "checkpoints").glob("*.pt"):
        state = torch.load(checkpoint, weights_only=True)
        state["spec"].update(spec)
        torch.save(state, checkpoint)
    result = cli("eval", run)
    assert result.exit_code == 2 and message in result.output, result.output


def test_predict_checks_the_stored_data_encoding_too(cli, tmp_path):
    import numpy as np
    import torch

    import mltrain

    run = mltrain.fit(write_config(tmp_path, train={"epochs": 1}), quiet=True).run_dir
    for checkpoint in (run / "checkpoints").glob("*.pt"):
        state = torch.load(checkpoint, weights_only=True)
        state["data_state"] = {"mean": "abc", "std": [1.0]}
        torch.save(state, checkpoint)
    np.savez(tmp_path / "points.npz", x=np.zeros((3, 2), dtype=np.float32))
    result = cli("predict", run, tmp_path / "points.npz")
    assert result.exit_code == 2 and "the data encoding (data_state) could not be restored" in result.output
