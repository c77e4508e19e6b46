"""Predictions for new inputs: image files and folders, CSV rows, npz arrays and texts (a text
classifier's: lines of a .txt file, or its text column in a table), each preprocessed exactly as
the run's training data was (the checkpoint's normalisation statistics, column encoding,
tokenizer and class names), scored with the weights eval uses (the EMA where the run kept one).

Rows, one per input sample: `input` (a file, file:line or file:array[i]), then for a classifier
`classes` and `probabilities` (the top k, most likely first; softmax, or sigmoid for a sigmoid
head, applied here) and for a regression head `value` (in the target's units).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.arrays import read_samples
from .data.image_folder import IMAGE_SUFFIXES
from .data.inputs import Normalise
from .data.streamed import decode
from .data.tabular import encode_rows
from .data.table_files import read_table, table_format, table_header
from .data.tokenizer import Tokenizer, from_state, padded_ids
from .errors import UserError
from .console import counting
from .restore import Restored, restore
from .run_dir import to_json, write_atomically

BATCH_SIZE = 256  # samples per forward pass (and per step of the progress bar)
NPZ_DEFAULT_ARRAY = "x"  # read from `file.npz`; `file.npz:name` reads another
KEY = "input"  # how messages name an input path


@dataclass
class Source:
    """One input's samples: a name for each, and `take(start, stop)` giving samples [start, stop)
    model-ready on the CPU (images are decoded only then)."""

    names: list[str]
    take: Callable[[int, int], torch.Tensor]
    ids: list[str] | None = None  # a table's data.id_column values, carried into the rows

    def __len__(self) -> int:
        return len(self.names)


def _one_column(input: str | tuple[str, ...] | list[str] | None) -> str | None:
    """The column data.input names when it names one (`text` or `[text]`): a text classifier's."""
    if isinstance(input, (tuple, list)) and len(input) == 1:
        return input[0]
    return input if isinstance(input, str) else None


@dataclass(frozen=True)
class Preprocessing:
    """How the run turned its data into model inputs, from the checkpoint alone."""

    sample_shape: tuple[int, ...]
    dataset: str
    normalise: Normalise | None  # image runs: per-channel statistics of the stored (0..255) pixels
    columns: list[dict] | None  # table runs: each feature column's stored encoding
    id_column: str | None  # table runs: the column naming each row
    tokenizer: Tokenizer | None = None  # text classifiers: how their texts became token ids
    text_column: str | None = None  # text classifiers: the column of a table holding the texts

    @classmethod
    def of(cls, restored: Restored) -> Preprocessing:
        state = restored.data_state
        normalise = Normalise.from_state(state["mean"], state["std"]) if "mean" in state and "std" in state else None
        return cls(tuple(restored.spec.sample_shape), restored.cfg.data.dataset, normalise, state.get("columns"),
                   getattr(restored.cfg.data, "id_column", None), from_state(state),
                   _one_column(getattr(restored.cfg.data, "input", None)))

    def texts(self, names: list[str], texts: list[str], where: str) -> Source:
        """Texts as the run's tokenizer read its training texts: each sample_shape[0] ids, padded."""
        ids = torch.from_numpy(padded_ids(self.tokenizer, texts, self.sample_shape[0], f"{KEY} {where}"))
        return Source(names, lambda start, stop: ids[start:stop])

    def lines(self, file: Path) -> Source:
        """Each non-empty line of a UTF-8 text file, one text to classify."""
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"{KEY} {file}: cannot read it as UTF-8 text ({type(error).__name__})") from None
        numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
        return self.texts([f"{file}:{number}" for number, _ in numbered], [line for _, line in numbered], str(file))

    def table_texts(self, file: Path) -> Source:
        """The run's text column (data.input) of a .csv or .parquet table."""
        format = table_format(file)
        header = table_header(file, format, KEY)
        if self.text_column not in header:
            raise UserError(f"{KEY} {file}: no column '{self.text_column}', the text column the model reads "
                            f"(columns here: {', '.join(header)})")
        rows = read_table(file, format, KEY, [self.text_column], text=(self.text_column,))
        texts = rows.columns[self.text_column].texts().tolist()
        return self.texts([rows.where(row) for row in range(rows.rows)], texts, str(file))

    def images(self, files: list[Path]) -> Source:
        if self.normalise is None or len(self.sample_shape) != 3:
            raise UserError(f"{KEY} {files[0]}: the model was trained on dataset '{self.dataset}', whose samples are "
                            f"not image files; give them as a .npz array shaped (N, {_shape(self.sample_shape)})")
        channels, side = self.sample_shape[0], self.sample_shape[-1]

        def take(start: int, stop: int) -> torch.Tensor:
            images = []
            for file in files[start:stop]:
                image = decode(file, side, KEY)
                if image.shape[0] != channels:
                    raise UserError(f"{KEY} {file}: {_channels(image.shape[0])}, but the model reads "
                                    f"{_channels(channels)} ({_shape(self.sample_shape)}); convert it first")
                images.append(image)
            return self.normalise(torch.stack(images))

        return Source([str(file) for file in files], take)

    def table(self, file: Path) -> Source:
        if self.tokenizer is not None and self.text_column is not None:
            return self.table_texts(file)
        if self.columns is None:
            raise UserError(f"{KEY} {file}: the model was trained on dataset '{self.dataset}', not on a table; "
                            f"give its samples as a .npz array shaped (N, {_shape(self.sample_shape)})")
        x, names, ids = encode_rows(file, self.columns, KEY, self.id_column)
        encoded = torch.from_numpy(x)
        return Source(names, lambda start, stop: encoded[start:stop], ids)

    def arrays(self, file: Path, name: str) -> Source:
        """Samples as the run's data stored them: image runs' arrays in pixel units, normalised
        here; any other run's arrays are model inputs as they are."""
        x = read_samples(file, name, KEY)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise UserError(f"{KEY} {file}: array '{name}' holds samples shaped {tuple(x.shape[1:])}, but the model "
                            f"reads samples shaped {self.sample_shape}; give an array (N, {_shape(self.sample_shape)})")
        samples = torch.from_numpy(np.ascontiguousarray(x))
        if self.normalise is not None:
            samples = self.normalise(samples)
        return Source([f"{file}:{name}[{i}]" for i in range(len(x))], lambda start, stop: samples[start:stop])


def _shape(shape: Sequence[int]) -> str:
    return ", ".join(map(str, shape))


def _channels(count: int) -> str:
    return f"{count} channel" + ("s" if count != 1 else "")


def _image_files(folder: Path) -> list[Path]:
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise UserError(f"{KEY} {folder}: a folder with no images ({', '.join(IMAGE_SUFFIXES)}) in it or below it")
    return files


def _sources(arguments: Sequence[str | Path], preprocessing: Preprocessing) -> list[Source]:
    """Each argument as a source of samples: a folder or file of images, a CSV file, `file.npz`
    (its array x) or `file.npz:name`. Every argument is checked before any image is decoded."""
    readers = []
    for argument in map(str, arguments):
        path, name = Path(argument), None
        head, _, tail = argument.rpartition(":")
        if not path.exists() and head.lower().endswith(".npz") and tail:
            path, name = Path(head), tail
        if not path.exists():
            raise UserError(f"{KEY} {path}: no such file or folder")
        suffix = path.suffix.lower()
        if path.is_dir():
            readers.append(partial(preprocessing.images, _image_files(path)))
        elif suffix in IMAGE_SUFFIXES:
            readers.append(partial(preprocessing.images, [path]))
        elif suffix in (".csv", ".parquet"):
            readers.append(partial(preprocessing.table, path))
        elif suffix == ".npz":
            readers.append(partial(preprocessing.arrays, path, name or NPZ_DEFAULT_ARRAY))
        elif suffix == ".txt" and preprocessing.tokenizer is not None:
            readers.append(partial(preprocessing.lines, path))
        else:
            raise UserError(f"{KEY} {path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a .csv or .parquet table or a "
                            ".npz file; give one of those or a folder of images"
                            + (", or a .txt file of texts, one a line" if preprocessing.tokenizer is not None else ""))
    return [read() for read in readers]


@dataclass
class Predictions:
    checkpoint: Path
    task: str  # classification | regression
    rows: list[dict]


def _refuse_language_models(restored: Restored) -> None:
    if from_state(restored.data_state) is not None and restored.spec.target_shape:  # a next token at each position
        raise UserError(f"{restored.path}: holds a language model ('{restored.cfg.model.arch}' on dataset "
                        f"'{restored.cfg.data.dataset}'), which continues text rather than scoring inputs; use "
                        f"`mltrain sample {restored.run_dir or restored.path} --prompt TEXT --tokens N`")


def _rows(restored: Restored, logits: torch.Tensor, names: list[str], top_k: int,
          ids: list[str] | None = None) -> list[dict]:
    """One row per sample of a batch of logits: its input, its id (a table with data.id_column),
    then what the model says."""
    criterion, spec = restored.learner.criterion, restored.spec
    heads = [{"input": name} for name in names] if ids is None \
        else [{"input": name, "id": row_id} for name, row_id in zip(names, ids)]
    if not criterion.classifies:
        values = criterion.predict(logits).float().cpu()  # (B, *target_shape)
        return [{**head, "value": value.item() if value.ndim == 0 else value.flatten().tolist()}
                for head, value in zip(heads, values)]
    class_names = spec.class_names or tuple(map(str, range(spec.num_classes)))
    probabilities = criterion.probabilities(logits).float().cpu()  # (B, *target_shape, classes)
    if spec.target_shape:  # a class per position: the most likely one at each
        chosen, index = probabilities.max(dim=-1)
    else:
        chosen, index = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
    return [{**head, "classes": [class_names[i] for i in classes.flatten().tolist()],
             "probabilities": p.flatten().tolist()} for head, classes, p in zip(heads, index, chosen)]


@torch.inference_mode()
def predict(run: str | Path, inputs: Sequence[str | Path], top_k: int = 1, batch_size: int | None = None,
            device: str = "auto", progress: bool = False) -> Predictions:
    """Predict every sample of `inputs` with a run's checkpoint (a run directory: best.pt, else
    last.pt), `batch_size` (default BATCH_SIZE) at a time. Writes nothing. `progress` shows a bar
    on a terminal when there is more than one batch."""
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: must be at least 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    if not inputs:
        raise UserError("give at least one input: image files or folders, .csv files, .npz files")
    restored = restore(run, device=device)
    _refuse_language_models(restored)
    if restored.spec.target_shape and restored.learner.criterion.classifies and top_k > 1:
        raise UserError(f"--top-k {top_k}: this model predicts a class at each of "
                        f"{_shape(restored.spec.target_shape)} positions; predict gives the most likely class at "
                        "each (--top-k 1)")
    sources = _sources(inputs, Preprocessing.of(restored))
    model, learner = restored.model.eval(), restored.learner
    total, rows = sum(map(len, sources)), []
    with counting(total, "predicting", shown=progress and total > batch_size) as advance:
        for source in sources:
            for start in range(0, len(source), batch_size):
                x = source.take(start, start + batch_size).to(learner.device)
                with learner.autocast():
                    logits = model(x).float()
                rows += _rows(restored, logits, source.names[start:start + batch_size], top_k,
                              source.ids[start:start + batch_size] if source.ids is not None else None)
                advance(len(x))
    task = "classification" if learner.criterion.classifies else "regression"
    return Predictions(restored.path, task, rows)


def _flat(row: dict) -> dict:
    """A row as CSV columns: class_1, probability_1, ... (or value_1, ... for several values)."""
    columns = {"input": row["input"], **({"id": row["id"]} if "id" in row else {})}
    if "classes" in row:
        for rank, (name, probability) in enumerate(zip(row["classes"], row["probabilities"]), start=1):
            columns[f"class_{rank}"], columns[f"probability_{rank}"] = name, probability
    elif isinstance(row["value"], list):
        columns.update({f"value_{i}": value for i, value in enumerate(row["value"], start=1)})
    else:
        columns["value"] = row["value"]
    return columns


OUTPUT_SUFFIXES = (".csv", ".jsonl")


def check_output(path: Path) -> None:
    """An --output path predictions can be written to: checked before any prediction is made."""
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"--output {path}: give a file ending in {' or '.join(OUTPUT_SUFFIXES)}")
    if not path.parent.is_dir():
        raise UserError(f"--output {path}: no such folder {path.parent}; create it first")


def write_predictions(predictions: Predictions, path: Path) -> None:
    """The rows as a CSV table (flat columns) or JSON lines (one row object per line)."""
    check_output(path)
    if path.suffix.lower() == ".jsonl":
        text = "".join(to_json(row) + "\n" for row in predictions.rows)
    else:
        rows = [_flat(row) for row in predictions.rows]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["input"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_atomically(path, text)  # a write the disk refuses is one line naming the file, exit 1
