"""A checkpoint's model as a file other tools run: ONNX, a torch.export program (.pt2), or
safetensors weights with a JSON sidecar holding all that is needed to rebuild and preprocess.

Every export is checked before it is reported done: the file is run back (onnxruntime, the
loaded .pt2 program, a model rebuilt from the safetensors file and its sidecar alone) on a batch
of the run's data, or of random inputs shaped by the checkpoint's spec when the data is not
readable here, and compared with PyTorch's outputs for the same batch.

The exported graphs take a batch of samples, model-ready (as after the preprocessing the sidecar
and the checkpoint describe), with a dynamic batch dimension. A classifier's graph returns its
logits (softmax or sigmoid is the reader's to apply, as `mltrain predict` does); a regression
model's returns the values (B, *target_shape) in the target's units. The weights are those eval
uses: the EMA where the run kept one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from . import __version__
from .checkpoint import spec_from_state, spec_state
from .config import config_from_dict, stored_config
from .data.table_encoding import feature_names
from .errors import TrainingFailed, UserError
from .losses import Loss, MeanSquaredError, build_loss
from .models import build_model, built_from, model_files
from .registry import from_stored
from .restore import Restored, restore
from .run_dir import MARKER, RunDir, is_run_directory, to_json, write_atomically

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "safetensors": ".safetensors"}
EXTRAS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "pt2": (), "safetensors": ("safetensors",)}
CHECKED_WITH = {"onnx": "onnxruntime", "pt2": "torch.export.load", "safetensors": "a model rebuilt from the sidecar"}
SIDECAR_FORMAT = "mltrain-safetensors"
CHECK_SAMPLES = 16  # samples of the batch the export is checked on
# The batch the graph is traced with: not 1 (torch.export specialises that size), and not the check's
# size, so the check also proves the batch dimension dynamic.
TRACE_SAMPLES = 2
TOLERANCE = 1e-4  # largest abs difference accepted, per unit of the largest |output| (at least 1)
ONNX_SINGLE_FILE_BYTES = 2 ** 31 - 2 ** 20  # protobuf's 2 GiB limit, less room for the graph: weights go beside
INPUT_NAME, OUTPUT_NAME = "input", "output"
RUN_FILES = ("summary.json", "config.yaml", MARKER)  # besides checkpoints/: a run's files no export replaces


class Values(nn.Module):
    """A regression model with its head's `predict`: values in the target's units, not raw outputs."""

    def __init__(self, model: nn.Module, criterion: MeanSquaredError):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.criterion.predict(self.model(x))


def exportable(model: nn.Module, criterion: Loss) -> nn.Module:
    """What an exported file computes: a classifier's logits, a regression model's values."""
    return model if criterion.classifies else Values(model, criterion)


@dataclass
class Exported:
    path: Path
    format: str
    files: list[Path]  # everything written: the model file, and the sidecar for safetensors
    batch: str  # what the check ran on
    max_abs_diff: float
    tolerance: float  # the bound max_abs_diff was held to
    seconds: float  # exporting and checking

    @property
    def checked_with(self) -> str:
        return CHECKED_WITH[self.format]


def require(format: str) -> None:
    """The optional packages a format needs, imported here only."""
    for package in EXTRAS[format]:
        try:
            __import__(package)
        except ImportError:
            raise UserError(f"--format {format} needs {' and '.join(EXTRAS[format])}, and {package} is not "
                            f"installed: pip install \"mltrain[{format}]\"") from None


def default_path(restored: Restored, format: str) -> Path:
    """<run>/export/<checkpoint name>.<format>, or beside a checkpoint outside a run directory."""
    run = restored.run_dir
    folder = run / "export" if run is not None else restored.path.parent
    return folder / (restored.path.stem + FORMATS[format])


def check_batch(restored: Restored) -> tuple[torch.Tensor, str]:
    """Up to CHECK_SAMPLES model-ready samples of the run's data (test, else val, else train), or
    random ones shaped by the spec when the data is not readable here; and what they are."""
    try:
        data = restored.data()
    except UserError as error:
        spec, generator = restored.spec, torch.Generator().manual_seed(0)
        shape = (CHECK_SAMPLES, *spec.sample_shape)
        if "vocabulary" in restored.data_state:  # token ids
            batch = torch.randint(0, spec.num_classes, shape, generator=generator)
        else:
            batch = torch.randn(shape, generator=generator)
        reason = str(error).split(";")[0]  # what is missing, without the advice for training
        return batch, f"{CHECK_SAMPLES} random inputs shaped by the checkpoint's spec (its data is not readable " \
                      f"here: {reason})"
    split = next(name for name in ("test", "val", "train") if name in data.splits)
    x = data.splits[split][0]
    batch = x[:CHECK_SAMPLES].cpu()
    return batch, f"{len(batch)} samples of the run's {split} split"


def _export_failed(format: str, restored: Restored, error: BaseException) -> UserError:
    while error.__cause__ is not None:  # the exporters wrap the reason in their own advice
        error = error.__cause__
    detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return UserError(f"--format {format} cannot express model.arch '{restored.cfg.model.arch}' "
                     f"({type(error).__name__}: {detail}); --format safetensors stores any model's weights")


@contextlib.contextmanager
def _exporting(format: str, restored: Restored) -> Iterator[None]:
    """The exporter's own failures as one line naming the format and the architecture; its
    progress prints, log lines and warnings kept off the user's terminal."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    except UserError:
        raise
    except Exception as error:  # the exporters raise many kinds; each means the graph could not be captured
        raise _export_failed(format, restored, error) from None
    finally:
        logging.disable(logging.NOTSET)


@contextlib.contextmanager
def _running_back(path: Path, reader: str) -> Iterator[None]:
    """A written file its reader refuses is a failed check (exit 1), as a wrong output is."""
    try:
        yield
    except Exception as error:  # the readers raise their own kinds
        detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise TrainingFailed(f"{path}: written, but {reader} cannot run it ({type(error).__name__}: {detail}); "
                             "the file is kept for inspection") from None


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch")},)


def _onnx(model: nn.Module, trace: torch.Tensor, batch: torch.Tensor, path: Path, restored: Restored) -> torch.Tensor:
    import onnx
    import onnxruntime

    weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    with _exporting("onnx", restored):
        torch.onnx.export(model, (trace,), str(path), dynamo=True, verbose=False, dynamic_shapes=_dynamic_batch(),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          external_data=weight_bytes > ONNX_SINGLE_FILE_BYTES)
    # The class names in the model itself (the sidecar has them too: for a model whose weights are in
    # a .data file, the one place).
    if restored.spec.class_names and weight_bytes <= ONNX_SINGLE_FILE_BYTES:
        exported = onnx.load(str(path))
        onnx.helper.set_model_props(exported, {"class_names": json.dumps(list(restored.spec.class_names))})
        onnx.save(exported, str(path))
    write_atomically(sidecar_path(path), to_json(_sidecar(restored, path, batch), indent=2) + "\n")
    with _running_back(path, "onnxruntime"):
        onnx.checker.check_model(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0])


def _pt2(model: nn.Module, trace: torch.Tensor, batch: torch.Tensor, path: Path, restored: Restored) -> torch.Tensor:
    with _exporting("pt2", restored):
        program = torch.export.export(model, (trace,), dynamic_shapes=_dynamic_batch())
        torch.export.save(program, str(path))
    with _running_back(path, "torch.export.load"):
        return torch.export.load(str(path)).module()(batch)


def sidecar_path(path: Path) -> Path:
    """model.safetensors -> model.json; model.onnx -> model.onnx.json (both exports may share a folder)."""
    return path.with_suffix(".json") if path.suffix == ".safetensors" else path.with_name(f"{path.name}.json")


def _sidecar(restored: Restored, path: Path, batch: torch.Tensor) -> dict:
    """What an exported file needs beside it: how to make its inputs (the data state: class names,
    normalisation statistics, a table's column encoding with feature_names, the vocabulary), the
    config and spec to rebuild it, and the scale of a regression model's raw outputs."""
    checkpoint = restored.checkpoint
    data_state = dict(restored.data_state)
    if "columns" in data_state:  # a table: the name of each model input, in order
        data_state["feature_names"] = feature_names(data_state["columns"])
    return {
        "format": SIDECAR_FORMAT, "format_version": 1, "weights": path.name, "mltrain": __version__,
        "checkpoint": str(restored.path), "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"),
        "averaged": checkpoint.get("ema") is not None,  # the EMA weights, as eval scores them
        "input_dtype": str(batch.dtype).removeprefix("torch."),
        "config": stored_config(checkpoint["config"]), "spec": spec_state(restored.spec), "data_state": data_state,
        # What rebuilds the model without the files it came from (a Hugging Face model's config.json); null for others.
        "model_files": model_files(restored.model),
        # Regression: what the model's raw outputs are scaled by (null: they are in the target's units).
        "target_scale": getattr(restored.learner.criterion, "target_scale", None),
    }


def _safetensors(model: nn.Module, trace: torch.Tensor, batch: torch.Tensor, path: Path,
                 restored: Restored) -> torch.Tensor:
    from safetensors.torch import save_model

    sidecar = _sidecar(restored, path, batch)
    save_model(restored.model, str(path), metadata={"format": SIDECAR_FORMAT})  # shared (tied) weights stored once
    write_atomically(sidecar_path(path), to_json(sidecar, indent=2) + "\n")
    rebuilt, _ = load_safetensors(path)
    return rebuilt(batch)


def load_safetensors(path: str | Path) -> tuple[nn.Module, dict]:
    """A model rebuilt from an exported .safetensors file and its JSON sidecar alone (no checkpoint,
    no data), in eval mode on the CPU, computing what the other formats do (see `exportable`);
    and the sidecar (config, spec, data_state: class names, normalisation statistics, CSV
    encoding, vocabulary)."""
    from safetensors.torch import load_model

    path = Path(path)
    try:
        sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{sidecar_path(path)}: cannot read the sidecar of {path.name} ({error}); export again "
                        "with `mltrain export RUN --format safetensors`") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT \
            or not {"config", "spec", "target_scale"} <= set(sidecar):
        raise UserError(f"{sidecar_path(path)}: not an mltrain safetensors sidecar (a '{SIDECAR_FORMAT}' marker, "
                        "config, spec and target_scale); export again with `mltrain export RUN --format safetensors`")
    with from_stored(), built_from(sidecar.get("model_files")):
        cfg = config_from_dict(sidecar["config"], source=str(sidecar_path(path)))
        spec = spec_from_state(sidecar["spec"], sidecar_path(path))
        criterion = build_loss(cfg.model.head, spec, cfg.train.label_smoothing, sidecar["target_scale"])
        model = build_model(cfg.model, spec, criterion.num_outputs)
    load_model(model, str(path))
    return exportable(model, criterion).eval(), sidecar


# Each writes the file and returns what the written file computes for the check batch.
WRITERS: dict[str, Callable[..., torch.Tensor]] = {"onnx": _onnx, "pt2": _pt2, "safetensors": _safetensors}


def run_written(path: Path) -> Path | None:
    """The run directory a file lands in: its folder, or the one above (<run>/export/, <run>/checkpoints/);
    where the path is listed, not where a link may lead."""
    folder = Path(os.path.abspath(path.parent))
    return next((run for run in (folder, folder.parent) if is_run_directory(run)), None)


def _refuse_replacing(files: list[Path], restored: Restored, run: Path | None, force: bool) -> None:
    """Export writes no file through a link and replaces only what it wrote: a run's export/ folder
    is its own; any other existing file only with --force; the checkpoint and a run's checkpoints,
    summary, config and marker never."""
    for file in files:
        folder = Path(os.path.abspath(file.parent))
        own = run is not None and folder == run / "export"
        link = file.parent if own and file.parent.is_symlink() else file if file.is_symlink() else None
        if link is not None:
            raise UserError(f"{link} is a link; export writes no file through a link: remove it, or choose "
                            "another --output")
        if not file.exists():
            continue
        protected = run is not None and (folder == run / "checkpoints" or folder == run and file.name in RUN_FILES)
        if not file.is_file() or protected or file.samefile(restored.path):
            raise UserError(f"{file}: export replaces no folder, checkpoint, or run's {', '.join(RUN_FILES)}, "
                            "even with --force; choose another --output")
        if not own and not force:
            raise UserError(f"{file} exists and export did not write it; pass --force to replace it, or choose "
                            "another --output")


def export(target: str | Path, format: str, output: str | Path | None = None, force: bool = False) -> Exported:
    """Export a run's checkpoint (a run directory: best.pt, else last.pt) to `format` at `output`
    (default: <run>/export/<checkpoint>.<format>), then check the file against PyTorch's outputs.
    A difference above TOLERANCE raises TrainingFailed (exit 1); the file is kept to inspect.
    Writing into a run directory takes its lock; see `_refuse_replacing` for what may be replaced."""
    if format not in FORMATS:
        raise UserError(f"--format {format!r}: choose from {', '.join(FORMATS)}")
    require(format)
    started = time.perf_counter()
    restored = restore(target, device="cpu")  # exported graphs run anywhere; traced on the CPU
    path = Path(output) if output is not None else default_path(restored, format)
    if output is not None and not path.parent.is_dir():
        raise UserError(f"--output {path}: no such folder {path.parent}; create it first")
    folder = path.parent if path.parent.is_dir() else path.parent.parent
    if not os.access(folder, os.W_OK):
        raise UserError(f"{folder} is not writable; pass --output with a path in a writable folder")
    files = [path, sidecar_path(path)] if format in ("safetensors", "onnx") else [path]
    run = run_written(path)
    with RunDir.reopen(run) if run is not None else contextlib.nullcontext():
        _refuse_replacing(files, restored, run, force)
        path.parent.mkdir(exist_ok=True)
        with _removed_on_failure(files):
            return _write_and_check(restored, format, path, files, started)


@contextlib.contextmanager
def _removed_on_failure(files: list[Path]) -> Iterator[None]:
    """The files an export wrote are removed when it fails before its check (a model that cannot
    be rebuilt, an interrupt), so no half an export is left; a file its check refuses is kept to
    inspect (TrainingFailed). A file left as it was stays."""
    before = {file: _identity(file) for file in files}
    try:
        yield
    except TrainingFailed:
        raise
    except BaseException:
        for file in files:
            if _identity(file) not in (None, before[file]):
                file.unlink()
        raise


def _identity(file: Path) -> tuple[int, int, int] | None:
    """What tells a file apart from a rewritten one: inode, size and modification time; None when absent."""
    try:
        status = file.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def _write_and_check(restored: Restored, format: str, path: Path, files: list[Path], started: float) -> Exported:
    model = exportable(restored.model, restored.learner.criterion).eval()
    batch, described = check_batch(restored)
    trace = torch.cat([batch, batch])[:TRACE_SAMPLES]
    with torch.no_grad():
        expected = model(batch).float()
        got = WRITERS[format](model, trace, batch, path, restored).float()
    if got.shape != expected.shape:
        raise TrainingFailed(f"{path}: gives outputs shaped {tuple(got.shape)} for {described}, PyTorch "
                             f"{tuple(expected.shape)}")
    difference = float((got - expected).abs().max()) if expected.numel() else 0.0
    tolerance = TOLERANCE * max(1.0, float(expected.abs().max()) if expected.numel() else 1.0)
    exported = Exported(path, format, files, described, difference, tolerance, time.perf_counter() - started)
    if not difference <= tolerance:  # NaN fails too
        raise TrainingFailed(f"{path}: checked with {exported.checked_with} on {described}: its outputs differ from "
                             f"PyTorch's by up to {difference:.2e}, above the tolerance {tolerance:.1e}; the file is "
                             "kept for inspection")
    return exported
