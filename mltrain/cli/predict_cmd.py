from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .errors import exit_codes
from .options import JSON, TRUST_CODE

if TYPE_CHECKING:
    from ..prediction import Predictions

SHOWN_ROWS = 50  # rows printed as a table; --output or --json give them all


def predict(
    target: Path = typer.Argument(..., metavar="RUN_DIR_OR_CKPT", help="A run directory (uses best.pt, "
                                  "else last.pt) or a .pt checkpoint.", show_default=False),
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Image files or folders of images, .csv "
                                       "files, .npz files (array x, or FILE.npz:NAME).", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write every prediction to this .csv or "
                                          ".jsonl file.", show_default=False),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Classes per input, most likely first."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Inputs per forward pass "
                                             "(default: 256).", show_default=False),
    as_json: bool = JSON,
    trust_code: bool = TRUST_CODE,
) -> None:
    """Predict new images, CSV rows or arrays with a trained model, preprocessed as in training.

    Classifiers give the top-k classes by name with their probabilities; regression models give
    the value. Uses the EMA weights where the run kept them. Writes only the --output file.

    Example: mltrain predict runs/flowers-20260101-120000 photos/ --top-k 3 --output predictions.csv
    """
    with exit_codes(trust_code):
        from ..prediction import check_output, predict as predict_inputs, write_predictions

        if output is not None:
            check_output(output)
        predictions = predict_inputs(target, inputs, top_k, batch_size, progress=True)
        if output is not None:
            write_predictions(predictions, output)
    if as_json:
        from ..run_dir import to_json

        typer.echo(to_json({"checkpoint": str(predictions.checkpoint), "task": predictions.task,
                            "count": len(predictions.rows), "predictions": predictions.rows}))
        return
    _print(predictions, output)


def _print(predictions: Predictions, output: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    rows = predictions.rows
    if output is None or len(rows) <= SHOWN_ROWS:
        table = Table(title_justify="left")
        table.add_column("input")
        table.add_column("prediction" if predictions.task == "classification" else "value", justify="left")
        for row in rows[:SHOWN_ROWS]:
            table.add_row(Text(row["input"]), Text(_prediction(row)))  # file and class names as they are
        console.print(table)
        if len(rows) > SHOWN_ROWS:
            console.print(f"... and {len(rows) - SHOWN_ROWS:,} more: --output FILE.csv or --json gives them all")
    if output is not None:
        console.print(f"{len(rows):,} predictions written to {output}", markup=False)


def _prediction(row: dict) -> str:
    if "classes" in row:
        return "  ".join(f"{name} {probability:.4f}" for name, probability in zip(row["classes"], row["probabilities"]))
    values = row["value"] if isinstance(row["value"], list) else [row["value"]]
    return "  ".join(f"{value:.6g}" for value in values)
