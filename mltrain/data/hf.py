"""Hugging Face `datasets` as a source (the optional extra `mltrain[hf]`): a builder (parquet, csv,
json, arrow, imagefolder, webdataset) with data_files, a folder written by `save_to_disk`, or a
hub name already in the local cache. `data.input` names the input column(s), `data.target` the
target. The samples take the kinds mltrain already reads:

- one image column: images resized to data.image_size, kept as uint8 and normalised per channel
  (as image_folder's);
- one column of numbers per sample (a list or an array): the samples as they are;
- scalar columns (one or several): a table, encoded as the csv source encodes one;
- one text column with data.tokenizer: each text as data.max_length token ids, cut or filled up
  with padding (a text classifier's input, `model.arch: hf/<name>`); the tokenizer is kept in
  the data state, as the text dataset keeps its own.

The dataset's own splits are used (validation or valid or val or dev as val); the rest is held out
with val_split and test_split. The Arrow data stays memory-mapped: columns are read from it as
arrays, never row by row into Python objects, except images, which are decoded one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, IMAGE, REGRESSION, SEQUENCE, TOKENS, VECTOR, did_you_mean
from ..schema import PositiveInt
from . import table_encoding
from .dataset import DataSpec, DataSplits
from .inputs import normalised_splits
from .orders import SHUFFLE_BUFFER
from .sections import HeldOutTest, PixelImagesConfig, TargetTask
from .splits import as_tensors, split_arrays
from .table_files import Column, Table, arrow_columns
from .tabular import targets_of
from .tokenizer import Tokenizer, from_state, padded_ids, tokenizer_for_texts

HF_PIP = 'pip install "mltrain[hf]"'
STREAM_SHARDS = 16  # shards a save_to_disk split is cut into when streamed (processes share them out)
VAL_NAMES = ("validation", "valid", "val", "dev")


class HFConfig(PixelImagesConfig, HeldOutTest, TargetTask):
    path: str
    """a builder (parquet, csv, json, arrow, imagefolder, webdataset) with data_files, a folder saved with save_to_disk, or a hub name from the local cache"""
    data_files: str | tuple[str, ...] | dict[str, Any] | None = None
    """the builder's files: a path or glob, a list, or {train: ..., test: ...}; relative to the config file"""
    input: str | tuple[str, ...]
    """the input column, or several scalar columns (a table)"""
    target: str
    """the column to predict"""
    image_size: PositiveInt = 32
    """an image column: the side every image is resized to, in pixels"""
    missing: Literal["error", "fill"] = "error"
    """scalar input columns: empty cells, as the csv source's data.missing"""
    tokenizer: str | None = None
    """a text input column: char | bpe (learned from the train texts; mltrain[text]) | a tokenizer.json or a folder holding one (a Hugging Face model's); null: text columns are categories of a table"""
    vocab_size: PositiveInt = 512
    """tokenizer bpe: the tokens it learns (at least 257)"""
    max_length: PositiveInt = 128
    """tokenizer: token ids per text, longer texts cut, shorter ones padded"""
    streaming: bool = False
    """true: read the train split as a stream (load_dataset(..., streaming=True)), never whole; needs train.max_steps"""
    shuffle_buffer: PositiveInt = SHUFFLE_BUFFER
    """streamed: examples in the datasets library's shuffle buffer (its shards come in a seeded order each pass)"""


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UserError(f"data.dataset hf: the `datasets` library is not installed; {HF_PIP}") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def load_splits(path: str, data_files: Any, streaming: bool = False) -> dict[str, Any]:
    """The dataset's splits by mltrain's names (train, and val and test where it has them);
    `streaming`: as IterableDatasets, read as they are iterated."""
    datasets = _datasets()
    local = Path(path)
    try:
        if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(local))
            if streaming:
                loaded = {name: split.to_iterable_dataset(num_shards=min(len(split), STREAM_SHARDS))
                          for name, split in (loaded.items() if isinstance(loaded, dict) else [("train", loaded)])}
        else:
            loaded = datasets.load_dataset(path, data_files=_as_lists(data_files), streaming=streaming)
    except Exception as error:  # a builder's missing files, no such dataset, offline and not cached
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"data.path '{path}': cannot load it with datasets ({type(error).__name__}: {detail}); give "
                        "a builder (parquet, csv, json, arrow, imagefolder, webdataset) with data.data_files, a "
                        "folder written by save_to_disk, or a hub name already in the Hugging Face cache "
                        f"({datasets.config.HF_DATASETS_CACHE})") from None
    if isinstance(loaded, (datasets.Dataset, datasets.IterableDataset)):
        loaded = {"train": loaded}
    splits = {"train": loaded.get("train")}
    splits["val"] = next((loaded[name] for name in VAL_NAMES if name in loaded), None)
    splits["test"] = loaded.get("test")
    if splits["train"] is None:
        raise UserError(f"data.path '{path}': no train split (splits: {', '.join(loaded)}); name the training files "
                        "train in data.data_files, e.g. {train: data/train.parquet}")
    return {name: split for name, split in splits.items() if split is not None}


def _as_lists(data_files: Any) -> Any:
    if isinstance(data_files, tuple):
        return list(data_files)
    if isinstance(data_files, dict):
        return {name: _as_lists(files) for name, files in data_files.items()}
    return data_files


def _column(split: Any, name: str, key: str) -> Any:
    if name not in split.column_names:
        raise UserError(f"{key} '{name}': the dataset has no such column; {did_you_mean(name, split.column_names)}"
                        f"columns: {', '.join(split.column_names)}")
    return split.features[name]


def _kind(feature: Any) -> str:
    """image, numbers (a list or array per sample) or scalar, from a column's datasets feature."""
    datasets = _datasets()
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, (datasets.Sequence, datasets.Array2D, datasets.Array3D, list)) \
            or type(feature).__name__ == "List":  # datasets 4 calls its list feature List
        return "numbers"
    return "scalar"


def image_mode(split: Any, column: str) -> str:
    """L when every training image is grey, else RGB (grey ones converted): read from the images'
    headers, before any is decoded."""
    grey = all(item[column].mode in ("1", "L") for item in split.select_columns([column]))
    return "L" if grey else "RGB"


def _images(split: Any, column: str, image_size: int, mode: str) -> np.ndarray:
    """uint8 (N, C, size, size), decoded one image at a time, all converted to `mode`."""
    return np.stack([image_pixels(item[column], image_size, mode) for item in split.select_columns([column])])


def image_pixels(image: Any, image_size: int, mode: str) -> np.ndarray:
    """A decoded (PIL) image as uint8 (C, size, size) in `mode`."""
    from torchvision.transforms.v2.functional import resize

    pixels = np.array(image.convert(mode))
    tensor = torch.from_numpy(pixels[..., None] if pixels.ndim == 2 else pixels).permute(2, 0, 1)
    return resize(tensor, [image_size, image_size], antialias=True).numpy()


def _numbers(split: Any, column: str) -> np.ndarray:
    values = np.asarray(split.with_format("numpy")[column])
    if values.dtype == object or not np.issubdtype(values.dtype, np.number):
        raise UserError(f"data.input '{column}': its samples are not arrays of one shape of numbers; give a column of "
                        "equal-length number lists")
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise UserError(f"data.input '{column}': a sample holds NaN or inf; samples must be finite")
    return values


def _table(split: Any, columns: list[str], where: str, key: str = "data.input") -> Table:
    """Columns of a split as a table (Arrow, memory-mapped); ClassLabel columns as their names."""
    datasets = _datasets()
    table = Table(Path(where), list(columns), arrow_columns(split.data.table.select(columns), key, Path(where)), None)
    for name in columns:
        feature = split.features[name]
        if isinstance(feature, datasets.ClassLabel):  # ids into its names: a text column's codes
            ids = table.columns[name].numbers
            codes = np.where(np.isnan(ids), -1, ids).astype(np.int64)
            table.columns[name] = Column(codes=codes, levels=np.array(feature.names, dtype=object))
    return table


@DATASETS.register("hf", "a Hugging Face dataset (mltrain[hf]): data.path a builder with data.data_files, a "
                   "save_to_disk folder or a cached hub name; data.input's images, number lists, scalar "
                   "columns or text (with data.tokenizer) predict data.target", HFConfig,
                   tags={IMAGE, VECTOR, SEQUENCE, TOKENS, CLASSIFICATION, REGRESSION})
def hf(val_split: float, seed: int, path: str, data_files: Any, input: str | tuple[str, ...], target: str,
       task: str, test_split: float, image_size: int, missing: str, normalize: Any, task_from_head: bool = False,
       streaming: bool = False, shuffle_buffer: int = SHUFFLE_BUFFER, tokenizer: str | None = None,
       vocab_size: int = 512, max_length: int = 128, mean: list[float] | None = None,
       std: list[float] | None = None, columns: list[dict] | None = None, class_names: list[str] | None = None,
       first_samples: int | None = None, vocabulary: str | None = None,
       tokenizer_json: str | None = None) -> DataSplits:
    """`mean`, `std`, `columns`, `class_names`, `vocabulary` or `tokenizer_json` (a text column's
    tokenizer) and (streamed) `first_samples` are the stored data state when rebuilding."""
    inputs = [input] if isinstance(input, str) else list(input)
    stored_tokenizer = from_state({"vocabulary": vocabulary, "tokenizer_json": tokenizer_json})
    if streaming and (tokenizer is not None or stored_tokenizer is not None):
        raise UserError("data.tokenizer: text columns are read in memory; set data.streaming: false")
    if streaming:
        from .hf_stream import streamed_hf

        return streamed_hf(path, data_files, val_split, inputs, target, task, image_size, missing, normalize, shuffle_buffer,
                           task_from_head, mean, std, columns, class_names, first_samples)
    splits = load_splits(path, data_files)
    for name in [*inputs, target]:
        for split in splits.values():
            _column(split, name, "data.target" if name == target else "data.input")
    kinds = {name: _kind(splits["train"].features[name]) for name in inputs}
    targets = {name: _table(split, [target], f"{path} ({name} split)", "data.target") for name, split in splits.items()}
    label = splits["train"].features[target]
    if class_names is None and isinstance(label, _datasets().ClassLabel):
        class_names = list(label.names)  # the dataset's own order: its ids stay the class ids
    ys = {}
    ys["train"], class_names = targets_of(targets["train"], target, task, task_from_head, class_names)
    for name in set(targets) - {"train"}:  # the other splits in the training split's classes
        ys[name] = targets_of(targets[name], target, task, task_from_head, class_names)[0]
    if tokenizer is not None or stored_tokenizer is not None:
        xs, chosen = _token_ids(splits, inputs, tokenizer, vocab_size, max_length, stored_tokenizer)
        spec = DataSpec((max_length,), _count(class_names), tuple(class_names or ()),
                        token_vocabulary=chosen.vocab_size)
        return DataSplits(spec, _held_out(xs, ys, val_split, seed, test_split),
                          {**chosen.state(), "class_names": class_names})
    if len(inputs) == 1 and kinds[inputs[0]] == "image":
        mode = image_mode(splits["train"], inputs[0])
        xs = {name: _images(split, inputs[0], image_size, mode) for name, split in splits.items()}
        data, normalise = normalised_splits(_held_out(xs, ys, val_split, seed, test_split), mean, std, normalize)
        spec = DataSpec(tuple(xs["train"].shape[1:]), _count(class_names), tuple(class_names or ()))
        return DataSplits(spec, data, {**normalise.state(), "class_names": class_names})
    if len(inputs) == 1 and kinds[inputs[0]] == "numbers":
        xs = {name: _numbers(split, inputs[0]) for name, split in splits.items()}
        spec = DataSpec(tuple(xs["train"].shape[1:]), _count(class_names), tuple(class_names or ()))
        return DataSplits(spec, _held_out(xs, ys, val_split, seed, test_split), {"class_names": class_names})
    not_scalar = [name for name in inputs if kinds[name] != "scalar"]
    if not_scalar:
        raise UserError(f"data.input: {', '.join(not_scalar)} hold images or number lists, which are read one column "
                        "at a time; give that column alone, or scalar columns (a table)")
    return _tabular(splits, inputs, ys, val_split, seed, test_split, missing, path, columns, class_names)


def _token_ids(splits: dict[str, Any], inputs: list[str], name: str | None, vocab_size: int, max_length: int,
               stored: Tokenizer | None) -> tuple[dict[str, np.ndarray], Tokenizer]:
    """Each split's text column as (N, max_length) padded token ids, and the tokenizer that read
    them: the stored one when rebuilding, else the one data.tokenizer names."""
    if len(inputs) != 1:
        raise UserError(f"data.tokenizer: reads one text column, but data.input names {len(inputs)}; give the "
                        "text column alone")
    (column,) = inputs
    texts = {split_name: texts_of(split, column) for split_name, split in splits.items()}
    chosen = stored or tokenizer_for_texts(name, vocab_size, texts["train"], [text for part in texts.values()
                                                                            for text in part])
    return {split_name: padded_ids(chosen, part, max_length, f"data.input '{column}' ({split_name} split)")
            for split_name, part in texts.items()}, chosen


def texts_of(split: Any, column: str) -> list[str]:
    """A string column's texts, read from Arrow; an empty cell or a column of another type is a
    UserError naming it."""
    feature = split.features[column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        raise UserError(f"data.input '{column}': data.tokenizer reads text, but this column holds {feature}; give "
                        "a text column, or remove data.tokenizer")
    texts = split.data.table.column(column).to_pylist()
    empty = next((row for row, text in enumerate(texts) if text is None), None)
    if empty is not None:
        raise UserError(f"data.input '{column}': row {empty} has no text (null); fill or drop such rows first")
    return texts


def _tabular(splits: dict[str, Any], inputs: list[str], ys: dict[str, np.ndarray], val_split: float, seed: int,
             test_split: float, missing: str, path: str, columns: list[dict] | None,
             class_names: list[str] | None) -> DataSplits:
    tables = {name: _table(split, inputs, f"{path} ({name} split)") for name, split in splits.items()}
    if missing == "error":
        for table in tables.values():
            table_encoding.refuse_missing(table, inputs, "input")
    rows = {name: np.arange(table.rows) for name, table in tables.items()}
    held = _split(rows, ys, val_split, seed, test_split)
    source = {"train": "train", "val": "val" if "val" in tables else "train",
              "test": "test" if "test" in tables else "train"}  # the table each held split's rows index
    if columns is None:
        columns = table_encoding.fit(tables["train"].take(held["train"][0]), inputs, missing)
    data = {name: (torch.from_numpy(table_encoding.encode(tables[source[name]].take(index), columns)),
                   torch.from_numpy(y)) for name, (index, y) in held.items()}
    spec = DataSpec((data["train"][0].shape[1],), _count(class_names), tuple(class_names or ()))
    return DataSplits(spec, data, {"columns": columns, "class_names": class_names})


def _split(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], val_split: float, seed: int,
           test_split: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The dataset's own splits, and val and test held out of train where it has none."""
    pairs = [(xs[name], ys[name]) if name in xs else None for name in ("val", "test")]
    return split_arrays((xs["train"], ys["train"]), val_split, seed, test_split, *pairs)


def _held_out(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], val_split: float, seed: int,
              test_split: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return as_tensors(_split(xs, ys, val_split, seed, test_split))


def _count(class_names: list[str] | None) -> int | None:
    return len(class_names) if class_names else None
