"""A run's hyperparameters: its resolved config flattened to dotted keys (`optimizer.lr`), and
the keys on which runs differ. `mltrain runs`, `mltrain compare` and the loggers all use these."""

from __future__ import annotations

import json
from typing import Any


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.01}} -> {"optimizer.lr": 0.01}; lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differing(configs: list[dict[str, Any]]) -> list[str]:
    """The dotted keys whose value is not the same in every flattened config (absent counts as a
    value), in the order they first appear."""
    keys = list(dict.fromkeys(key for config in configs for key in config))
    return [key for key in keys if len({(key in config, as_text(config.get(key))) for config in configs}) > 1]


def as_text(value: Any) -> str:
    """A value as it reads in YAML flow style: 0.01, true, null, [128, 64]."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict, bool)) or value is None:
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)
