from __future__ import annotations

from pathlib import Path

import typer

from .checks_table import show_report
from .errors import exit_codes
from .options import JSON, SET


def overfit_tiny(
    config: Path = typer.Argument(..., help="YAML config file.", show_default=False),
    samples: int = typer.Option(32, "--samples", min=1, help="Training samples in the tiny subset."),
    steps: int = typer.Option(500, "--steps", min=1, help="Most optimizer steps to take."),
    set_: list[str] = SET,
    as_json: bool = JSON,
) -> None:
    """Sanity-check a config by overfitting a tiny fixed subset; exit 0 on pass, 1 on fail.

    Also checks the loss at initialisation and that gradients reach every weight.

    Example: mltrain overfit-tiny configs/quickstart.yaml --samples 32 --steps 500
    """
    with exit_codes():
        from ..checks.overfit_tiny import overfit_tiny as run_check
        from ..config import load_config

        report = run_check(load_config(config, set_), samples=samples, steps=steps)
    show_report(report, as_json, _print)


def _print(report: dict) -> None:
    from rich.console import Console

    from .checks_table import checks_table

    console = Console(highlight=False, soft_wrap=True)
    console.print(checks_table(f"overfit-tiny: {report['samples']} samples, {report['steps']} steps, "
                               f"lr {report['lr']:g}", report["checks"]))
    if report["passed"]:
        console.print("[green]PASS[/]: the model can fit this data; go on to a full run")
    else:
        console.print(f"[red]FAIL[/]: {report['hint']}")
