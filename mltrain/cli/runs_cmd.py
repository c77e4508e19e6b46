from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..run_dir import to_json
from .errors import exit_codes
from .options import JSON


def runs(
    directory: Path = typer.Argument(Path("runs"), help="Directory holding run directories."),
    sort: Optional[str] = typer.Option(None, "--sort", metavar="METRIC_OR_KEY",
                                       help="Order by a metric, best first (e.g. val/accuracy: the best value "
                                            "when monitored, else test, else final), or by a config key."),
    filters: list[str] = typer.Option([], "--filter", metavar="KEY=VALUE",
                                      help="Keep the runs whose config has KEY=VALUE (a dotted key as in "
                                           "config.yaml, or status), e.g. --filter model.arch=cnn. Repeatable."),
    as_json: bool = JSON,
) -> None:
    """Table of the runs under DIRECTORY, with the hyperparameters that differ between them.

    Each row: status, the differing config keys, best metric, test scores, epochs, duration.

    Example: mltrain runs runs --filter model.arch=mlp --sort val/accuracy
    """
    with exit_codes():
        from ..runs_table import collect_runs

        rows, keys = collect_runs(directory, filters, sort, warn=lambda line: print(line, file=sys.stderr))
    if as_json:
        typer.echo(to_json({"directory": str(directory), "differing": keys, "runs": rows}))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..hparams import as_text

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)  # a pipe gets whole rows
    if not rows:
        console.print(f"no runs in {directory}" + (" match the filters" if filters else ""))
        return
    table = Table(title=f"runs in {directory}", title_justify="left")
    columns = ["run", "status", *keys, "best", "test", "epochs", "duration", "params"]
    for column in columns:
        table.add_column(escape(column), justify="right" if column in ("epochs", "duration", "params") else "left")
    colours = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}
    for row in rows:
        best = row["best"] or {}
        best_text = f"{best.get('metric')} {best['value']:.4g} @ epoch {best['epoch']}" \
            if best.get("epoch") and isinstance(best.get("value"), (int, float)) else "-"
        test_text = "  ".join(f"{key.split('/', 1)[-1]} {value:.4g}" for key, value in row["test"].items()
                              if isinstance(value, (int, float))) or "-"
        status = str(row["status"])
        table.add_row(escape(row["run"]), f"[{colours.get(status, 'white')}]{escape(status)}[/]",
                      *(escape(as_text(row["hyperparameters"][key])) for key in keys), escape(best_text), test_text,
                      str(row["epochs"] if row["epochs"] is not None else "-"),
                      f"{row['duration_s']:.1f}s" if isinstance(row["duration_s"], (int, float)) else "-",
                      f"{row['params']:,}" if isinstance(row["params"], int) else "-")
    console.print(table)
