from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..run_dir import to_json
from .errors import exit_codes
from .options import JSON


def runs(
    directory: Path = typer.Argument(Path("runs"), help="Directory holding run directories."),
    as_json: bool = JSON,
) -> None:
    """Table of the runs under DIRECTORY: status, epochs, best metric, test scores, duration.

    Example: mltrain runs runs
    """
    with exit_codes():
        from ..runs_table import collect_runs

        rows = collect_runs(directory)
    if as_json:
        typer.echo(to_json({"directory": str(directory), "runs": rows}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)  # a pipe gets whole rows
    if not rows:
        console.print(f"no runs in {directory}")
        return
    table = Table(title=f"runs in {directory}", title_justify="left")
    for column in ("run", "status", "epochs", "steps", "best", "test", "duration", "params"):
        table.add_column(column, justify="left" if column in ("run", "status", "best", "test") else "right")
    colours = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}
    for row in rows:
        best = row["best"] or {}
        best_text = f"{best['metric']} {best['value']:.4g} @ epoch {best['epoch']}" if best.get("epoch") else "-"
        test_text = "  ".join(f"{key.split('/', 1)[1]} {value:.4g}" for key, value in row["test"].items()) or "-"
        table.add_row(row["run"], f"[{colours.get(row['status'], 'white')}]{row['status']}[/]",
                      str(row["epochs"] if row["epochs"] is not None else "-"),
                      str(row["steps"] if row["steps"] is not None else "-"), best_text, test_text,
                      f"{row['duration_s']:.1f}s" if row["duration_s"] is not None else "-",
                      f"{row['params']:,}" if row["params"] else "-")
    console.print(table)
