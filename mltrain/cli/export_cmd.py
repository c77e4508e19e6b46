from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import exit_codes
from .options import TRUST_CODE


def export(
    target: Path = typer.Argument(..., metavar="RUN_DIR_OR_CKPT", help="A run directory (uses best.pt, "
                                  "else last.pt) or a .pt checkpoint.", show_default=False),
    format: str = typer.Option(..., "--format", "-f", metavar="onnx|pt2|safetensors", help="onnx (onnxruntime "
                               "and other runtimes), pt2 (torch.export), or safetensors weights with a JSON "
                               "sidecar to rebuild and preprocess.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The file to write (default: "
                                          "<run>/export/<checkpoint>.<format>).", show_default=False),
    force: bool = typer.Option(False, "--force", help="Replace an existing file export did not write (never a "
                               "checkpoint or a run's summary.json or config.yaml)."),
    trust_code: bool = TRUST_CODE,
) -> None:
    """Export a trained model, checked against PyTorch's outputs before it reports done.

    The file takes a batch of preprocessed samples (dynamic batch size) and gives a classifier's
    logits, or a regression model's values in the target's units. The check runs it on the run's data, or on random inputs when the data is not here,
    and prints the largest difference; above the tolerance the exit code is 1.

    Example: mltrain export runs/quickstart-20260101-120000 --format onnx
    """
    with exit_codes(trust_code):
        from ..export import export as export_checkpoint

        exported = export_checkpoint(target, format, output, force)
    size = sum(path.stat().st_size for path in exported.files)
    typer.echo(f"exported {' and '.join(map(str, exported.files))} ({format}, {size / 2**20:.2f} MiB) in "
               f"{exported.seconds:.1f} s")
    typer.echo(f"checked with {exported.checked_with} on {exported.batch}: max abs difference "
               f"{exported.max_abs_diff:.2e} (tolerance {exported.tolerance:.1e})")
