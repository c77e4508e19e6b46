from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..run_dir import to_json
from .errors import exit_codes
from .options import JSON

LEADING = ("run", "status")
TRAILING = ("best", "test", "epochs", "duration", "params")
WRAPPING = ("best", "test")  # wrap at spaces to make room; every other column keeps one line
RIGHT_ALIGNED = ("epochs", "duration", "params")
STATUS_COLOURS = {"completed": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}
PIPE_WIDTH = 200  # a pipe gets whole rows


def runs(
    directory: Path = typer.Argument(Path("runs"), help="Directory holding run directories."),
    sort: Optional[str] = typer.Option(None, "--sort", metavar="METRIC_OR_KEY",
                                       help="Order by a metric, best first (e.g. val/accuracy: the best value "
                                            "when monitored, else test, else final), or by a config key."),
    filters: list[str] = typer.Option([], "--filter", metavar="KEY=VALUE",
                                      help="Keep the runs whose config has KEY=VALUE (a dotted key as in "
                                           "config.yaml, or status), e.g. --filter model.arch=cnn. Repeatable."),
    columns: list[str] = typer.Option([], "--columns", metavar="KEY[,KEY...]",
                                      help="The config keys to show as columns, in this order (dotted, e.g. "
                                           "--columns optimizer.lr,model.arch); repeatable. Default: the keys "
                                           "that differ most between the runs, as many as fit the width. "
                                           "--json adds them to the differing keys."),
    as_json: bool = JSON,
) -> None:
    """Table of the runs under DIRECTORY, with the hyperparameters that differ between them.

    Each row: status, the config keys that differ most (as many as fit the width; --columns picks
    them), best metric, test scores, epochs, duration.

    Example: mltrain runs runs --filter model.arch=mlp --sort val/accuracy
    """
    chosen = list(dict.fromkeys(key.strip() for item in columns for key in item.split(",") if key.strip()))
    with exit_codes():
        from ..runs_table import collect_runs

        rows, keys = collect_runs(directory, filters, sort, warn=lambda line: print(line, file=sys.stderr),
                                  columns=chosen)
    if as_json:
        typer.echo(to_json({"directory": str(directory), "differing": keys, "runs": rows}))
        return
    from rich.console import Console

    from ..runs_table import most_differing

    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit()
    console = Console(highlight=False, width=PIPE_WIDTH if piped else None)
    if not rows:
        console.print(f"no runs in {directory}" + (" match the filters" if filters else ""))
        return
    fixed = [_fixed_cells(row) for row in rows]
    values = {key: [_value(row, key) for row in rows] for key in chosen or keys}
    ranked = most_differing(rows, keys)
    shown = chosen or [key for key in keys if key in _fitting(fixed, values, ranked, console.width)]
    console.print(_table(f"runs in {directory}", fixed, {key: values[key] for key in shown}))
    left_out = [] if chosen else [key for key in ranked if key not in shown]
    if left_out:
        console.print(f"... and {len(left_out)} more differing {'key' if len(left_out) == 1 else 'keys'} not shown; "
                      f"choose the columns with --columns, e.g. --columns {','.join(left_out[:2])}", markup=False)


def _value(row: dict[str, Any], key: str) -> str:
    from ..hparams import as_text

    return as_text(row["hyperparameters"][key])


def _fixed_cells(row: dict[str, Any]) -> dict[str, str]:
    """A run's cells outside the hyperparameters, as plain text."""
    best = row["best"] or {}
    return {
        "run": row["run"],
        "status": str(row["status"]),
        "best": f"{best.get('metric')} {best['value']:.4g} @ epoch {best['epoch']}"
                if best.get("epoch") and isinstance(best.get("value"), (int, float)) else "-",
        "test": "  ".join(f"{key.split('/', 1)[-1]} {value:.4g}" for key, value in row["test"].items()
                          if isinstance(value, (int, float))) or "-",
        "epochs": str(row["epochs"] if row["epochs"] is not None else "-"),
        "duration": f"{row['duration_s']:.1f}s" if isinstance(row["duration_s"], (int, float)) else "-",
        "params": f"{row['params']:,}" if isinstance(row["params"], int) else "-",
    }


def _widths(texts: list[str]) -> tuple[int, int]:
    """A column's narrowest width (its longest word) and its width on one line, padding included."""
    from rich.cells import cell_len

    narrowest = max((cell_len(word) for text in texts for word in text.split()), default=0)
    return narrowest + 2, max(map(cell_len, texts)) + 2


def _fitting(fixed: list[dict[str, str]], values: dict[str, list[str]], ranked: list[str], width: int) -> set[str]:
    """The keys, taken in `ranked` order, whose columns still fit in `width` beside the fixed
    columns and those taken before them. A key's column holds each value on one line; best and test
    wrap, and rich narrows the widest wrapping column first, evening them out, so each of them gets
    no less than the longest word of any."""
    def widths(name: str) -> tuple[int, int]:
        return _widths([name, *(cells[name] for cells in fixed)])

    wrapping = [widths(name) for name in WRAPPING]
    level = max(narrowest for narrowest, _ in wrapping)
    room = width - 1 - sum(min(natural, level) + 1 for _, natural in wrapping) \
        - sum(widths(name)[1] + 1 for name in (*LEADING, *TRAILING) if name not in WRAPPING)
    fitting = set()
    for key in ranked:
        need = _widths([key, *values[key]])[1] + 1
        if need <= room:
            fitting.add(key)
            room -= need
    return fitting


def _table(title: str, fixed: list[dict[str, str]], values: dict[str, list[str]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in (*LEADING, *values, *TRAILING):
        table.add_column(escape(column), justify="right" if column in RIGHT_ALIGNED else "left",
                         no_wrap=column not in WRAPPING)
    for i, cells in enumerate(fixed):
        status = f"[{STATUS_COLOURS.get(cells['status'], 'white')}]{escape(cells['status'])}[/]"
        table.add_row(escape(cells["run"]), status, *(escape(texts[i]) for texts in values.values()),
                      *(escape(cells[name]) for name in TRAILING))
    return table
