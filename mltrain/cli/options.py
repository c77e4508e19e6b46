"""Options several commands share."""

from __future__ import annotations

import dataclasses
import types
import typing

import typer


def _dotted_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config schema (dataclasses) that takes a value; an optional section
    (train.early_stopping) is a key itself, as it may be set to null."""
    keys = []
    for name, hint in typing.get_type_hints(schema).items():
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if optional:
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        if optional or not dataclasses.is_dataclass(hint):
            keys.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            keys += _dotted_keys(hint, f"{prefix}{name}.")
    return keys


def complete_config_key(incomplete: str) -> list[str]:
    """Shell completion of --set: the config keys that start with what is typed, each with its `=`."""
    from ..config import Config

    return [f"{key}=" for key in _dotted_keys(Config) if key.startswith(incomplete)]


SET = typer.Option(
    [], "--set", metavar="KEY=VALUE", autocompletion=complete_config_key,
    help="Override a config key with a YAML value, e.g. --set optimizer.lr=0.01 or "
         "--set model.hidden=[256,128]. Repeatable.",
)
JSON = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
