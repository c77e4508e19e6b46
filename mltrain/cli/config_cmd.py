from __future__ import annotations

from pathlib import Path

import typer

from .errors import exit_codes
from .options import SET


def config(
    config: Path = typer.Argument(..., help="YAML config file.", show_default=False),
    set_: list[str] = SET,
) -> None:
    """Validate CONFIG and print it fully resolved, every default filled in.

    Example: mltrain config configs/quickstart.yaml --set model.hidden=[256,128]
    """
    with exit_codes():
        from ..config import dump_config, load_config

        typer.echo(dump_config(load_config(config, set_)), nl=False)
