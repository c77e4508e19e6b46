"""The table of checks that overfit-tiny and preflight print."""

from __future__ import annotations

from typing import Any, Callable

from rich.table import Table

from ..errors import ExitCode

STYLES = {"pass": "green", "warn": "yellow", "fail": "red", "skip": "dim"}


def checks_table(title: str, checks: list[dict[str, Any]], with_fix: bool = False) -> Table:
    """One row per check: name, PASS/WARN/FAIL/SKIP, the detail and (with_fix) what to do."""
    with_fix = with_fix and any(check.get("fix") for check in checks)
    table = Table(title=title, title_justify="left")
    for column in ("check", "result", "detail") + (("what to do",) if with_fix else ()):
        table.add_column(column, overflow="fold")
    for check in checks:
        status = check["status"]
        row = [check["name"], f"[{STYLES[status]}]{status.upper()}[/]", check["detail"]]
        table.add_row(*row, *([check.get("fix", "")] if with_fix else []))
    return table


def show_report(report: dict[str, Any], as_json: bool, draw: Callable[[dict[str, Any]], None]) -> None:
    """A checks report as one JSON object (--json) or drawn as tables; exit 1 when a check failed."""
    import typer

    from ..run_dir import to_json

    if as_json:
        typer.echo(to_json(report))
    else:
        draw(report)
    if not report["passed"]:
        raise typer.Exit(ExitCode.FAILED)
