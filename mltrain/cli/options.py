"""Options several commands share."""

from __future__ import annotations

import typing

import typer


def _section(annotation: typing.Any) -> type | None:
    """The config section class a field holds (through Optional and SerializeAsAny), if any."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_section, typing.get_args(annotation))), None)


def _dotted_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config schema that takes a value: the run-level keys and each
    section's shared keys (a component's own keys depend on the component a config names). An
    optional section (train.early_stopping) is a key itself, as it may be set to null."""
    keys = []
    for name, field in schema.model_fields.items():
        section = _section(field.annotation)
        if section is None or not field.is_required() and field.default is None:
            keys.append(prefix + name)
        if section is not None:
            keys += _dotted_keys(section, f"{prefix}{name}.")
    return keys


def complete_config_key(incomplete: str) -> list[str]:
    """Shell completion of --set: the config keys that start with what is typed, each with its `=`.
    Reads the schemas only: no torch import."""
    from ..config import Config

    return [f"{key}=" for key in _dotted_keys(Config) if key.startswith(incomplete)]


SET = typer.Option(
    [], "--set", metavar="KEY=VALUE", autocompletion=complete_config_key,
    help="Override a config key with a YAML value, e.g. --set optimizer.lr=0.01 or "
         "--set model.hidden=[256,128]. Repeatable.",
)
JSON = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else there.")
TRUST_CODE = typer.Option(
    False, "--trust-code",
    help="Let the config stored in a checkpoint, an export or a sweep study name import paths "
         "(package.module:callable): rebuilding it imports and calls them, which runs their code. "
         "Only for files you trust; built-in components and installed plugins need no flag.",
)
