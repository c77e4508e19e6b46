"""`dataset: hf`: Hugging Face datasets from local files, each through fit, eval, predict and a
resume: Parquet (scalar columns), JSON lines (a list of numbers per sample), an image folder, and
a folder written by save_to_disk (ClassLabel names)."""

import json
from pathlib import Path

import numpy as np
import pytest

import mltrain
from conftest import write_config
from helpers import write_images

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
parquet = pytest.importorskip("pyarrow.parquet")


def points(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=count), rng.normal(size=count)
    return a, b, (a + b > 0).astype(np.int64)


def parquet_source(directory: Path) -> tuple[dict, list[Path]]:
    a, b, y = points(160)
    parquet.write_table(pa.table({"a": a[:120], "b": b[:120], "label": y[:120]}), directory / "train.parquet")
    parquet.write_table(pa.table({"a": a[120:], "b": b[120:], "label": y[120:]}), directory / "test.parquet")
    data = {"path": "parquet", "data_files": {"train": "train.parquet", "test": "test.parquet"},
            "input": ["a", "b"], "target": "label"}
    return data, [directory / "test.parquet"]


def jsonl_source(directory: Path) -> tuple[dict, list[Path]]:
    a, b, y = points(120, seed=1)
    with open(directory / "rows.jsonl", "w") as handle:
        for row in zip(a, b, y):
            handle.write(json.dumps({"features": [row[0], row[1]], "label": ["neg", "pos"][row[2]]}) + "\n")
    np.savez(directory / "new.npz", x=np.stack([a[:5], b[:5]], axis=1).astype(np.float32))
    return {"path": "json", "data_files": "rows.jsonl", "input": "features", "target": "label"}, \
        [directory / "new.npz"]


def image_source(directory: Path) -> tuple[dict, list[Path]]:
    write_images(directory / "images", 10, channels=3, size=12, seed=0)  # images/dark, images/light
    data = {"path": "imagefolder", "data_files": {"train": "images/**"}, "input": "image", "target": "label",
            "image_size": 12}
    return data, [directory / "images" / "dark" / "0.png"]


def saved_source(directory: Path) -> tuple[dict, list[Path]]:
    a, b, y = points(150, seed=2)
    table = datasets.Dataset.from_dict({"a": a, "b": b, "label": y})
    table = table.cast_column("label", datasets.ClassLabel(names=["low", "high"]))
    table.train_test_split(test_size=0.2, seed=0).save_to_disk(str(directory / "saved"))
    parquet.write_table(pa.table({"a": a[:4], "b": b[:4]}), directory / "new.parquet")
    return {"path": "saved", "input": ["a", "b"], "target": "label"}, [directory / "new.parquet"]


SOURCES = {"parquet": parquet_source, "jsonl": jsonl_source, "imagefolder": image_source, "save_to_disk": saved_source}


@pytest.mark.parametrize("source", SOURCES)
def test_a_local_dataset_fits_evaluates_predicts_and_resumes(source, tmp_path):
    data, new_inputs = SOURCES[source](tmp_path)
    config = write_config(tmp_path, source, replace=True, data={"dataset": "hf", "batch_size": 16, **data},
                          model={"arch": "mlp", "hidden": [16]}, train={"epochs": 2})
    result = mltrain.fit(config)
    assert result.summary["status"] == "completed" and result.summary["final"]["val/accuracy"] > 0.5
    report = mltrain.evaluate(result.run_dir)  # the test split: the dataset's own, or held out
    class_names = {"parquet": ["0", "1"], "jsonl": ["neg", "pos"], "imagefolder": ["dark", "light"],
                   "save_to_disk": ["low", "high"]}[source]
    assert report["class_names"] == class_names
    rows = mltrain.predict(result.run_dir, new_inputs)
    assert rows and all(row["classes"][0] in class_names for row in rows)
    extended = mltrain.resume(result.run_dir, overrides=["train.epochs=3"])
    assert extended.summary["epochs_completed"] == 3


def test_what_cannot_load_is_one_clear_error(tmp_path):
    config = write_config(tmp_path, "absent", replace=True, data={
        "dataset": "hf", "path": "parquet", "data_files": "nothing-here.parquet", "input": "a", "target": "y"})
    with pytest.raises(mltrain.errors.UserError, match="cannot load it with datasets"):
        mltrain.fit(config)
    a, b, y = points(40)
    parquet.write_table(pa.table({"a": a, "b": b, "label": y}), tmp_path / "train.parquet")
    config = write_config(tmp_path, "typo", replace=True, data={
        "dataset": "hf", "path": "parquet", "data_files": "train.parquet", "input": ["a", "bb"], "target": "label"})
    with pytest.raises(mltrain.errors.UserError, match="data.input 'bb': the dataset has no such column; did you "
                                                       "mean 'b'"):
        mltrain.fit(config)
