"""`mltrain compare`: several runs' curves of one metric overlaid in one PNG, with the
hyperparameters on which the runs differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .errors import UserError
from .hparams import differing
from .plots import plot_comparison
from .registry import did_you_mean
from .run_dir import read_records
from .runs_table import read_hyperparameters


def curve(records: list[dict[str, Any]], metric: str) -> list[tuple[int, float]]:
    """(step, value) of every record holding the metric, one per step (an epoch's record repeats
    its last validation's numbers)."""
    points = {record["step"]: float(record[metric]) for record in records
              if isinstance(record.get(metric), (int, float)) and not isinstance(record.get(metric), bool)}
    return sorted(points.items())


def compare_runs(runs: list[Path], metric: str | None = None, output: Path | None = None,
                 warn: Callable[[str], None] = print) -> dict[str, Any]:
    """Overlay the runs' curves of `metric` (default: the first run's train.monitor) in one PNG
    (default: compare-<metric>.png in the working directory). A run without the metric is left out
    with a warning. Returns the plot's path, the metric, and the differing hyperparameters per run."""
    if len(runs) < 2:
        raise UserError("compare needs at least two run directories, e.g. mltrain compare runs/a runs/b")
    names = [run.name or str(run) for run in runs]
    if len(set(names)) < len(names):
        names = [str(run) for run in runs]  # same directory names under different parents
    hyperparameters, records = {}, {}
    for run, name in zip(runs, names):
        if not (run / "metrics.jsonl").is_file():
            raise UserError(f"{run}: not a run directory (no metrics.jsonl); give the directories `fit` wrote")
        hyperparameters[name] = read_hyperparameters(run)
        records[name] = read_records(run / "metrics.jsonl")
    metric = metric or str(hyperparameters[names[0]].get("train.monitor") or "train/loss")
    curves = {name: points for name in names if (points := curve(records[name], metric))}
    if not curves:
        logged = sorted({key for found in records.values() for record in found for key in record
                         if key not in ("epoch", "step")})
        raise UserError(f"--metric {metric}: no run logged it; {did_you_mean(metric, logged)}"
                        f"logged: {', '.join(logged) or 'nothing yet'}")
    for name in names:
        if name not in curves:
            warn(f"warning: {name} has no {metric}; left out of the plot")
    path = plot_comparison(curves, metric, output or Path.cwd() / f"compare-{metric.replace('/', '-')}.png")
    keys = differing(list(hyperparameters.values()))
    return {"plot": str(path), "metric": metric, "differing": keys,
            "runs": {name: {key: hyperparameters[name].get(key) for key in keys} for name in names}}
