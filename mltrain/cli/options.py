"""Options several commands share."""

from __future__ import annotations

import typer

SET = typer.Option(
    [], "--set", metavar="KEY=VALUE",
    help="Override a config key with a YAML value, e.g. --set optimizer.lr=0.01 or "
         "--set model.hidden=[256,128]. Repeatable.",
)
JSON = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
