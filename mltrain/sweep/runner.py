"""What `mltrain sweep` does: start a sweep, or continue one (--resume, --join), then report it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import dump_config, load_config
from ..errors import UserError
from ..monitor import mode_of
from .space import check_space, grid_points, parse_space
from .sweep_file import PRUNERS, SAMPLERS, read_sweep_file

if TYPE_CHECKING:
    from .results import Report
    from .study import Sweep


def _require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError('mltrain sweep needs Optuna, which is not installed: pip install "mltrain[sweep]"') from None


def start_sweep(config: Path, search: list[tuple[str, str]], overrides: list[str], trials: int | None,
                sampler: str | None, pruner: str | None, storage: str | None, sweep_dir: Path | None,
                jobs: int) -> Report:
    """Check everything, create the study with its trials, run them, report. `config` is a config
    or a sweep file; `search` holds (KEY=DIST, where it was given) pairs."""
    _require_optuna()
    sweep_file = read_sweep_file(config)
    if sweep_file is not None:
        config, search = sweep_file.config, sweep_file.search + search
        trials, sampler = trials or sweep_file.trials, sampler or sweep_file.sampler
        pruner = pruner or sweep_file.pruner
    sampler, pruner = sampler or "tpe", pruner or "median"
    for flag, value, choices in (("--sampler", sampler, SAMPLERS), ("--pruner", pruner, PRUNERS)):
        if value not in choices:
            raise UserError(f"{flag} {value}: choose from {', '.join(choices)}")
    base = load_config(config, overrides)
    params = parse_space(search)
    check_space(params, lambda extra: load_config(config, [*overrides, *extra]))
    if sampler == "grid":
        points = grid_points(params)
        tickets = points[:trials or len(points)]
    elif trials is None:
        raise UserError("--trials N: say how many trials to run, e.g. --trials 20")
    else:
        tickets = [{} for _ in range(trials)]

    from .study import Definition, create_sweep

    directory = sweep_dir or _new_directory(Path(base.output.dir) / f"{base.name}-sweep-{datetime.now():%Y%m%d-%H%M%S}")
    definition = Definition(
        base_config=dump_config(base), search=[text for text, _ in search], trials=len(tickets), sampler=sampler,
        pruner=pruner, seed=base.seed, monitor=base.train.monitor,
        direction="maximize" if mode_of(base.train.monitor, base.train.monitor_mode) == "max" else "minimize")
    sweep = create_sweep(directory, storage, definition, tickets)
    print(f"sweep {sweep.directory}: {len(tickets)} trials, {sampler} sampler, {pruner} pruner, "
          f"{'maximising' if definition.direction == 'maximize' else 'minimising'} {definition.monitor}", flush=True)
    return _run(sweep, jobs)


def continue_sweep(target: str, storage: str | None, sweep_dir: Path | None, jobs: int,
                   report: bool = True) -> Report | None:
    """Run what is left of an existing sweep (retrying the trials of dead workers), then report."""
    _require_optuna()
    from .study import open_sweep

    sweep = open_sweep(target, storage, sweep_dir)
    if report and sweep.unfinished():
        print(f"sweep {sweep.directory}: {sweep.unfinished()} of {sweep.definition.trials} trials to run", flush=True)
    return _run(sweep, jobs) if report else _work(sweep, jobs)


def _new_directory(base: Path) -> Path:
    """`base`, suffixed -2, -3... when a sweep started in the same second took it."""
    path, attempt = base, 1
    while path.exists():
        attempt += 1
        path = base.with_name(f"{base.name}-{attempt}")
    return path


def _work(sweep: Sweep, jobs: int) -> None:
    from .workers import work, work_in_processes

    if jobs == 1:
        work(sweep)
    else:
        work_in_processes(sweep, jobs)


def _run(sweep: Sweep, jobs: int) -> Report:
    from .results import write_report

    _work(sweep, jobs)
    return write_report(sweep)
