"""What a sweep leaves: one row per trial, trials.csv, best.yaml, and Optuna's plots."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from ..config import dump_config, load_config
from ..registry import from_stored
from ..run_dir import write_atomically
from .study import Sweep, without_experimental_warnings

_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


@dataclass
class Report:
    directory: Path
    monitor: str
    direction: str
    params: list[str]  # the searched keys, in the order given
    rows: list[dict[str, Any]]  # one per trial: trial, state, value, each param, duration_s, worker, run_dir, note
    best: dict[str, Any] | None  # the best complete row
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def trial_rows(sweep: Sweep) -> list[dict[str, Any]]:
    trials = sweep.trials()
    retried_as = {trial.system_attrs["retry_history"][-1]: trial.number for trial in trials
                  if trial.system_attrs.get("retry_history")}
    return [_row(trial, sweep, retried_as) for trial in trials]


def _row(trial: FrozenTrial, sweep: Sweep, retried_as: dict[int, int]) -> dict[str, Any]:
    state, note = _STATES[trial.state], trial.user_attrs.get("error") or trial.user_attrs.get("stopped") or ""
    if trial.number in retried_as:
        state, note = "interrupted", f"its worker stopped; retried as trial {retried_as[trial.number]}"
    elif trial.system_attrs.get("retry_history") and not note:
        note = f"retry of trial {trial.system_attrs['retry_history'][-1]}"
    ran_to_an_end = state in ("complete", "pruned", "failed") and trial.duration is not None
    return {"trial": trial.number, "state": state, "value": trial.value if trial.state == TrialState.COMPLETE else None,
            **{param.key: trial.params.get(param.key) for param in sweep.params},
            "duration_s": round(trial.duration.total_seconds(), 2) if ran_to_an_end else None,
            "worker": trial.user_attrs.get("worker"), "run_dir": trial.user_attrs.get("run_dir"), "note": note}


def write_report(sweep: Sweep) -> Report:
    """trials.csv, best.yaml (when a trial completed) and the plots, in the sweep directory."""
    definition = sweep.definition
    rows = trial_rows(sweep)
    complete = [row for row in rows if row["state"] == "complete"]
    pick = max if definition.direction == "maximize" else min
    best = pick(complete, key=lambda row: row["value"]) if complete else None
    report = Report(sweep.directory, definition.monitor, definition.direction, [p.key for p in sweep.params],
                    rows, best)
    report.files.append(_write_csv(rows, sweep.directory / "trials.csv"))
    if best is not None:
        report.files.append(_write_best(sweep, best))
    _plot(sweep, report, complete)
    return report


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["trial"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())
    return path


def _write_best(sweep: Sweep, best: dict[str, Any]) -> Path:
    """The best trial's whole config, as its run was trained: `mltrain fit best.yaml` runs it again."""
    with from_stored():
        cfg = load_config(sweep.base_config, [param.override(best[param.key]) for param in sweep.params])
    path = sweep.directory / "best.yaml"
    write_atomically(path, f"# best trial of sweep {sweep.study_name}: trial {best['trial']}, "
                           f"{sweep.definition.monitor} {best['value']:.6g}\n" + dump_config(cfg))
    return path


def _plot(sweep: Sweep, report: Report, complete: list[dict[str, Any]]) -> None:
    """Optimisation history, and parameter importances (they need complete trials whose
    parameters differ: Optuna would rank parameters that never varied)."""
    if not complete:
        report.notes.append("no plots: no trial completed")
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    study = sweep.study()
    drawings = [("history.png", lambda: plot_optimization_history(study, target_name=sweep.definition.monitor))]
    if any(len({str(row[key]) for row in complete}) > 1 for key in report.params):
        drawings.append(("importance.png", lambda: plot_param_importances(study)))
    else:
        report.notes.append("no importance.png: parameter importances need complete trials whose parameters differ")
    for name, draw in drawings:
        try:
            with without_experimental_warnings():
                axes = draw()
        except (ValueError, RuntimeError) as error:  # e.g. importances when no parameter varied
            report.notes.append(f"no {name}: {str(error).splitlines()[0]}")
            continue
        axes.figure.savefig(sweep.directory / name, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        report.files.append(sweep.directory / name)
