"""mltrain: train PyTorch neural networks from YAML configs.

The Python API mirrors the CLI; torch is imported only when a function is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__version__ = "0.1.0"


def fit(config: str | Path | dict, overrides: list[str] | tuple[str, ...] = (),
        run_dir: str | Path | None = None, device: str | None = None, quiet: bool = True, sinks: Sequence = ()):
    """Train from a YAML path or a config dict; returns FitResult(run_dir, summary). `sinks`
    (mltrain.sinks.Sink) also receive the loop's records."""
    from .config import config_from_dict, load_config
    from .fitting import fit as run_fit

    cfg = config_from_dict(config, overrides, source="dict") if isinstance(config, dict) \
        else load_config(config, overrides)
    return run_fit(cfg, run_dir=run_dir, device=device, quiet=quiet, sinks=sinks)


def resume(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (), device: str | None = None,
           quiet: bool = True, sinks: Sequence = ()):
    """Continue a run from its last checkpoint (see `mltrain fit --resume`); returns FitResult."""
    from .fitting import resume as run_resume

    return run_resume(run_dir, overrides, device=device, quiet=quiet, sinks=sinks)


def evaluate(checkpoint: str | Path, split: str | None = None,
             overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Score a run directory or checkpoint on a split (default: test, else val); returns the report."""
    from .evaluation import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, split, overrides)[0]


def predict(run: str | Path, inputs: Sequence[str | Path], top_k: int = 1, batch_size: int | None = None,
            device: str = "auto") -> list[dict[str, Any]]:
    """Predict image files or folders, CSV files and .npz files (`file.npz` reads array x,
    `file.npz:name` another) with a run directory or checkpoint; returns one row per sample:
    {"input", "classes", "probabilities"} (top_k, most likely first) or {"input", "value"}."""
    from .prediction import predict as predict_inputs

    return predict_inputs(run, inputs, top_k, batch_size, device).rows
