"""Small promises: BMP images train and predict, a CSV with a byte order mark reads as one
without, complex arrays are refused, and a stop during start-up is exit 130."""

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mltrain
from conftest import MLTRAIN
from helpers import write_config, write_images, write_table
from mltrain.data.streamed import decode


def fit(directory, data, model):
    config = {"seed": 0, "data": {"batch_size": 8, **data}, "model": model, "optimizer": {"name": "adam", "lr": 0.01},
              "train": {"epochs": 1}, "output": {"dir": str(directory / "runs")}}
    return mltrain.fit(config, run_dir=directory / "run").run_dir


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_bmp_decodes_to_the_pixels_of_the_same_png(tmp_path, mode):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 5, len(mode)), dtype=np.uint8)
    for suffix in (".bmp", ".png"):
        Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(tmp_path / f"image{suffix}")
    assert torch.equal(decode(tmp_path / "image.bmp", 4), decode(tmp_path / "image.png", 4))


def test_bmp_images_train_and_predict(cli, tmp_path):
    write_images(tmp_path / "pictures", 4, size=6, suffix=".bmp", seed=0)
    run = fit(tmp_path, {"dataset": "image_folder", "root": str(tmp_path / "pictures"), "image_size": 4},
              {"arch": "cnn", "channels": [2]})
    pictures = tmp_path / "pictures"
    result = cli("predict", run, pictures / "dark", pictures / "light" / "0.bmp", "--json")
    assert result.exit_code == 0, result.output
    assert [row["input"] for row in json.loads(result.stdout)["predictions"]] == \
        [str(pictures / "dark" / f"{i}.bmp") for i in range(4)] + [str(pictures / "light" / "0.bmp")]

    (tmp_path / "broken.bmp").write_bytes((tmp_path / "pictures" / "dark" / "0.bmp").read_bytes()[:70])
    result = cli("predict", run, tmp_path / "broken.bmp")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: input: cannot decode image {tmp_path / 'broken.bmp'}: ")


@pytest.fixture
def table_run(tmp_path):
    write_table(tmp_path / "plain.csv", rows=40, recipe="animals")
    (tmp_path / "marked.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.csv").read_bytes())  # as Excel saves
    return fit(tmp_path, {"dataset": "csv", "path": str(tmp_path / "marked.csv"), "target": "kind"},
               {"arch": "mlp", "hidden": [8]})


def test_a_csv_with_a_byte_order_mark_reads_as_the_same_csv_without(table_run, tmp_path):
    marked, plain = (mltrain.predict(table_run, [tmp_path / name]) for name in ("marked.csv", "plain.csv"))
    assert len(marked) == 40
    assert [row["probabilities"] for row in marked] == [row["probabilities"] for row in plain]


def test_complex_arrays_are_refused_naming_the_file_and_array(cli, table_run, tmp_path):
    np.savez(tmp_path / "waves.npz", x=np.ones((2, 5), dtype=np.complex64))
    result = cli("predict", table_run, tmp_path / "waves.npz")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"error: input {tmp_path / 'waves.npz'}: array 'x' holds complex values")


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
def test_sigterm_while_a_command_starts_up_is_exit_130(tmp_path):
    # predict imports torch (a second or so) before it looks at its arguments: the stop lands there
    process = subprocess.Popen([MLTRAIN, "predict", str(tmp_path / "no-run"), str(tmp_path / "rows.csv")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while process.poll() is None and not _catches_sigterm(process.pid):
            time.sleep(0.002)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr == "interrupted\n", (process.returncode, stderr)


def test_complex_training_arrays_are_refused_not_cut_to_their_real_part(cli, tmp_path):
    np.savez(tmp_path / "waves.npz", x_train=np.ones((20, 3), dtype=np.complex64), y_train=np.arange(20) % 2)
    config = write_config(tmp_path, data={"dataset": "npz", "path": str(tmp_path / "waves.npz")}, replace=True)
    result = cli("fit", config)
    assert result.exit_code == 2 and "array 'x_train' holds complex values" in result.output, result.output
