from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..run_dir import to_json
from .errors import exit_codes
from .options import JSON, TRUST_CODE


def eval_(
    target: Path = typer.Argument(..., metavar="RUN_DIR_OR_CKPT", help="A run directory (uses best.pt, "
                                  "else last.pt) or a .pt checkpoint.", show_default=False),
    split: Optional[str] = typer.Option(None, "--split", help="test, val or train; default: test, "
                                        "or val when the data has no test split.", show_default=False),
    set_: list[str] = typer.Option(
        [], "--set", metavar="data.KEY=VALUE",
        help="Change how the data is read: data.* keys only, the checkpoint fixes the rest. E.g. score "
             "another file of the same kind with --set data.path=new.csv (a path from the working "
             "directory). Repeatable."),
    as_json: bool = JSON,
    trust_code: bool = TRUST_CODE,
) -> None:
    """Evaluate a checkpoint on a split: loss, accuracy, per-class scores, confusion matrix.

    Needs no config file: the checkpoint holds it. Writes eval-<split>.json into the run directory.

    Example: mltrain eval runs/quickstart-20260101-120000 --split test
    """
    with exit_codes(trust_code):
        from ..evaluation import evaluate_checkpoint

        report, written = evaluate_checkpoint(target, split, set_)
    if as_json:
        typer.echo(to_json(report))
        return
    _print(report, written)


def _print(report: dict, written: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"{report['checkpoint']} (epoch {report['epoch']}, step {report['step']}) "
                  f"on {report['split']}: {report['samples']} samples")
    metrics = Table(show_header=True, title_justify="left")
    metrics.add_column("metric")
    metrics.add_column("value", justify="right")
    for key, value in report["metrics"].items():
        metrics.add_row(key, f"{value:.4%}" if key.endswith("accuracy") else f"{value:.4f}")
    console.print(metrics)
    if "per_class" in report:
        names, scores = report["class_names"], report["per_class"]
        per_class = Table(title="per class", title_justify="left")
        for column in ("class", "precision", "recall", "f1", "support"):
            per_class.add_column(column, justify="left" if column == "class" else "right")
        for i, name in enumerate(names):
            per_class.add_row(name, f"{scores['precision'][i]:.3f}", f"{scores['recall'][i]:.3f}",
                              f"{scores['f1'][i]:.3f}", str(scores["support"][i]))
        console.print(per_class)
        confusion = Table(title="confusion matrix (rows: true class, columns: predicted)", title_justify="left")
        confusion.add_column("")
        for name in names:
            confusion.add_column(name, justify="right")
        for name, row in zip(names, report["confusion_matrix"]):
            confusion.add_row(name, *[f"[bold]{count}[/]" if j == names.index(name) else str(count) if count else
                                      "[dim]0[/]" for j, count in enumerate(row)])
        console.print(confusion)
    if written:
        console.print(f"written to {written}")
