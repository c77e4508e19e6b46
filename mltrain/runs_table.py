"""What `mltrain runs` and `mltrain compare` read from run directories: each run's summary.json and
flattened config.yaml, filtered, sorted, and the hyperparameters on which the runs differ."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import parse_value
from .errors import UserError
from .hparams import as_text, differing, flatten
from .monitor import mode_of
from .registry import did_you_mean


def _read_mapping(path: Path, parse: Callable[[str], Any], what: str) -> dict[str, Any]:
    """A file that must hold a mapping, or a UserError saying what is wrong with it."""
    try:
        content = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: cannot be read ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not {what}")
    return content


def read_hyperparameters(run: Path) -> dict[str, Any]:
    """The run's config.yaml flattened to dotted keys."""
    return flatten(_read_mapping(run / "config.yaml", yaml.safe_load, "a config (a mapping of sections)"))


def read_summary(run: Path) -> dict[str, Any]:
    """The run's summary.json; {} if it has none yet (stopped before its first summary)."""
    path = run / "summary.json"
    return _read_mapping(path, json.loads, "a summary (a JSON object)") if path.exists() else {}


def _row(run: Path, summary: dict[str, Any], hyperparameters: dict[str, Any]) -> dict[str, Any]:
    def mapping(key: str) -> dict[str, Any]:
        value = summary.get(key)
        return value if isinstance(value, dict) else {}

    return {"run": run.name, "path": str(run), "status": summary.get("status", "unknown"),
            "epochs": summary.get("epochs_completed"), "steps": summary.get("steps"),
            "best": mapping("best") or None, "final": mapping("final"), "test": mapping("test"),
            "duration_s": summary.get("duration_s"), "params": summary.get("params"),
            "hyperparameters": hyperparameters}


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    """A run's figure for a metric: its best value when it is the monitored one, else its test
    score, else its final value."""
    best = row["best"] or {}
    for value in (best.get("value") if best.get("metric") == metric else None, row["test"].get(metric),
                  row["final"].get(metric)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def collect_runs(directory: str | Path, filters: list[str] = (), sort: str | None = None,
                 warn: Callable[[str], None] = print,
                 columns: list[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run directory directly under `directory` (oldest first: names carry the time) that
    passes the KEY=VALUE filters, sorted by `sort` (a metric, best first, or a config key); and the
    config keys on which they differ. Each run's hyperparameters are those keys and the config keys
    in `columns`, which the runs must have. A run whose files cannot be read is skipped with a warning."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory; runs are written to output.dir (default: runs)")
    rows = []
    for run in sorted(path for path in directory.iterdir() if (path / "config.yaml").is_file()):
        try:
            rows.append(_row(run, read_summary(run), read_hyperparameters(run)))
        except UserError as error:
            warn(f"warning: {error}; run skipped")
    for item in filters:
        rows = _filtered(rows, item)
    if sort:
        rows = _sorted(rows, sort)
    for key in columns:
        _check_column(rows, key)
    keys = differing([row["hyperparameters"] for row in rows])
    kept = list(dict.fromkeys([*keys, *columns]))
    for row in rows:
        row["hyperparameters"] = {key: row["hyperparameters"].get(key) for key in kept}
    return rows, keys


def most_differing(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """`keys` by how many distinct values the runs have for each, most first; ties keep their order."""
    def distinct(key: str) -> int:
        return len({as_text(row["hyperparameters"].get(key)) for row in rows})

    return sorted(keys, key=distinct, reverse=True)


def _check_column(rows: list[dict[str, Any]], key: str) -> None:
    known = {name for row in rows for name in row["hyperparameters"]}
    if rows and key not in known:
        raise UserError(f"--columns {key}: no run has this key; {did_you_mean(key, sorted(known))}"
                        "use a config key (as in config.yaml, dotted)")


def _filtered(rows: list[dict[str, Any]], item: str) -> list[dict[str, Any]]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UserError(f"--filter {item}: expected KEY=VALUE, e.g. --filter model.arch=cnn")
    known = {"status", *(name for row in rows for name in row["hyperparameters"])}
    if rows and key not in known:
        raise UserError(f"--filter {key}: no run has this key; {did_you_mean(key, sorted(known))}"
                        "use a config key (as in config.yaml, dotted) or status")
    wanted = parse_value(text)

    def matches(value: Any) -> bool:
        if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
            return math.isclose(value, wanted)
        return as_text(value) in (as_text(wanted), text)

    return [row for row in rows if matches(row["status"] if key == "status" else row["hyperparameters"].get(key))]


def _sorted(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    if any(key in row["hyperparameters"] for row in rows):
        def config_order(row: dict[str, Any]) -> tuple:
            value = row["hyperparameters"].get(key)
            return (0, value, "") if isinstance(value, (int, float)) else (1, 0, as_text(value))

        return sorted(rows, key=config_order)
    values = [metric_value(row, key) for row in rows]
    if rows and all(value is None for value in values):
        metrics = sorted({name for row in rows for part in ("final", "test") for name in row[part] if "/" in name})
        raise UserError(f"--sort {key}: no run has this metric or config key; {did_you_mean(key, metrics)}"
                        f"metrics: {', '.join(metrics) or 'none yet'}")
    sign = -1.0 if mode_of(key) == "max" else 1.0  # best first
    order = sorted(range(len(rows)), key=lambda i: (values[i] is None, sign * (values[i] or 0.0)))
    return [rows[i] for i in order]
