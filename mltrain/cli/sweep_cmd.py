from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .. import collector
from .errors import exit_codes
from .options import SET, TRUST_CODE

if TYPE_CHECKING:
    from ..sweep.results import Report


def sweep(
    config: Optional[Path] = typer.Argument(None, help="YAML config, or a sweep file (a sweep: mapping naming "
                                            "the config, its search space and settings).", show_default=False),
    search: list[str] = typer.Option(
        [], "--search", metavar="KEY=DIST",
        help="A config key and where to search it: uniform(LOW,HIGH), loguniform(LOW,HIGH), int(LOW,HIGH), "
             "logint(LOW,HIGH) or choice(V1,V2,...) with YAML values. Repeatable."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="How many trials to run (grid: at most "
                                         "every combination, the default)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="tpe (default), random or grid."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="median (default), hyperband or none: end a trial "
                                         "that falls behind the others at a validation of train.monitor."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes on this machine, sharing its cores."),
    storage: Optional[str] = typer.Option(None, "--storage", metavar="URL", help="The study's database, any "
                                          "SQLAlchemy URL (postgresql://...); default: SQLite in the sweep directory."),
    sweep_dir: Optional[Path] = typer.Option(None, "--sweep-dir", help="Write the sweep here instead of "
                                             "<output.dir>/<name>-sweep-<time>/ (with --join: this machine's trials)."),
    set_: list[str] = SET,
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="SWEEP_DIR", help="Finish a stopped sweep: "
                                          "its remaining trials, and those its killed workers left."),
    join: Optional[str] = typer.Option(None, "--join", metavar="DIR_OR_STUDY", help="Work on a running sweep: "
                                       "its directory, or its study name with --storage URL (other machines)."),
    worker: bool = typer.Option(False, "--worker", hidden=True),  # a --jobs process: run trials, no report
    trust_code: bool = TRUST_CODE,
) -> None:
    """Search hyperparameters with Optuna: each trial trains CONFIG with drawn values in its own run
    directory under the sweep directory; the best trial's config is written to best.yaml.

    Example: mltrain sweep configs/quickstart.yaml --search "optimizer.lr=loguniform(1e-4,1e-1)"
    --search "model.hidden=choice([64],[256,128])" --trials 20
    (continue a stopped one: mltrain sweep --resume runs/quickstart-sweep-20260101-120000)
    """
    collector.resume()  # a learner per trial: none may be frozen
    with exit_codes(trust_code):
        from ..errors import UserError
        from ..sweep.runner import continue_sweep, start_sweep

        if resume is not None or join is not None:
            given = [flag for flag, value in (("CONFIG", config), ("--search", search), ("--trials", trials),
                                              ("--sampler", sampler), ("--pruner", pruner), ("--set", set_))
                     if value]
            if resume is not None and join is not None:
                given.append("--join" if resume is not None else "--resume")
            if resume is not None and sweep_dir is not None:
                given.append("--sweep-dir")
            if given:
                raise UserError(f"{'--resume' if resume is not None else '--join'} continues a sweep as it was "
                                f"defined: drop {', '.join(given)}")
            report = continue_sweep(str(resume if resume is not None else join), storage, sweep_dir, jobs,
                                    report=not worker)
        elif config is None:
            raise UserError("missing CONFIG: give a config or a sweep file, e.g. mltrain sweep "
                            "configs/quickstart.yaml --search 'optimizer.lr=loguniform(1e-4,1e-1)' --trials 20")
        else:
            report = start_sweep(config, [(text, f"--search {text}") for text in search], set_, trials, sampler,
                                 pruner, storage, sweep_dir, jobs)
    if report is None:
        return
    _print(report)
    if report.best is None:
        with exit_codes():
            from ..errors import TrainingFailed

            raise TrainingFailed("no trial completed; the table above shows why each one ended")


def _print(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)  # a pipe gets whole rows
    table = Table(title=f"sweep {report.directory}: {'max' if report.direction == 'maximize' else 'min'} "
                        f"{report.monitor}", title_justify="left")
    for column in ("trial", "state", report.monitor, *report.params, "duration", "note"):
        table.add_column(column, justify="right" if column in ("trial", report.monitor, "duration") else "left",
                         max_width=60 if column == "note" else None)
    colours = {"complete": "green", "pruned": "yellow", "failed": "red", "interrupted": "magenta",
               "running": "cyan", "waiting": "white"}
    for row in report.rows:
        table.add_row(str(row["trial"]), f"[{colours[row['state']]}]{row['state']}[/]", _shown(row["value"]),
                      *(_shown(row[key]) for key in report.params),
                      f"{row['duration_s']:.1f}s" if row["duration_s"] is not None else "-", row["note"],
                      style="bold" if row is report.best else None)
    console.print(table)
    if report.best is not None:
        best_yaml = report.directory / "best.yaml"
        console.print(f"best: trial {report.best['trial']}, {report.monitor} {report.best['value']:.4g}; "
                      f"its config: {best_yaml} (train it: mltrain fit {best_yaml})")
    console.print("written: " + ", ".join(path.name for path in report.files) + f" in {report.directory}")
    for note in report.notes:
        console.print(note)


def _shown(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
