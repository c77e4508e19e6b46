from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import exit_codes


def compare(
    runs: list[Path] = typer.Argument(..., metavar="RUN...", help="Two or more run directories.",
                                      show_default=False),
    metric: Optional[str] = typer.Option(None, "--metric", help="The metric to plot, e.g. val/loss; default: "
                                         "the first run's train.monitor."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The PNG to write; default: "
                                          "compare-<metric>.png in the working directory."),
) -> None:
    """Overlay the runs' curves of one metric (by step) in one PNG and print the hyperparameters
    that differ between them.

    Example: mltrain compare runs/quickstart-20260101-120000 runs/quickstart-20260101-130000 --metric val/loss
    """
    with exit_codes():
        from ..compare import compare_runs
        from ..errors import UserError

        try:
            report = compare_runs(runs, metric, output, warn=lambda line: print(line, file=sys.stderr))
        except OSError as error:
            raise UserError(f"cannot write the plot {error.filename or output}: {error.strerror}") from None
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..hparams import as_text

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    if report["differing"]:
        table = Table(title="hyperparameters that differ", title_justify="left")
        for column in ["run", *report["differing"]]:
            table.add_column(escape(column))
        for run, values in report["runs"].items():
            table.add_row(escape(run), *(escape(as_text(value)) for value in values.values()))
        console.print(table)
    else:
        console.print("the runs have the same hyperparameters")
    console.print(f"{report['metric']} of {len(report['runs'])} runs plotted to {escape(report['plot'])}")
