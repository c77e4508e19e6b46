from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .checks_table import show_report
from .errors import exit_codes
from .options import JSON, SET


def preflight(
    config: Path = typer.Argument(..., help="YAML config file.", show_default=False),
    set_: list[str] = SET,
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Where the plots and preflight.json "
                                              "go; default: <output.dir>/<name>-preflight/.", show_default=False),
    as_json: bool = JSON,
) -> None:
    """The pre-training checklist: data, loss at init, baselines, gradient flow, batch independence,
    overfitting a tiny subset, the lr and the schedule. Exit 0 when nothing fails, 1 on a FAIL.

    Writes plots/preflight-batch.png (images), plots/preflight-lr.png and preflight.json.

    Example: mltrain preflight configs/quickstart.yaml
    """
    with exit_codes():
        from ..checks.preflight import preflight as run_checks
        from ..config import load_config

        report = run_checks(load_config(config, set_), output_dir)
    show_report(report, as_json, _print)


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from .checks_table import checks_table

    console = Console(highlight=False, soft_wrap=True)
    console.print(checks_table(f"preflight {report['name']}: {len(report['checks'])} checks in "
                               f"{report['seconds']:.1f}s on {report['device']}", report["checks"], with_fix=True))
    for check in report["checks"]:
        shown = check.get("values", {}).get("table")
        if shown:
            table = Table(title=shown["title"], title_justify="left")
            for column in shown["columns"]:
                table.add_column(column, justify="left" if column == shown["columns"][0] else "right")
            for row in shown["rows"]:
                table.add_row(*row)
            console.print(table)
    counts = {status: sum(check["status"] == status for check in report["checks"]) for status in ("fail", "warn")}
    if report["passed"]:
        console.print(f"[green]PASS[/]: no check failed ({counts['warn']} warning(s)); "
                      f"written to {report['output_dir']}")
    else:
        failed = ", ".join(check["name"] for check in report["checks"] if check["status"] == "fail")
        console.print(f"[red]FAIL[/]: {counts['fail']} check(s) failed: {failed}; see 'what to do' above")
