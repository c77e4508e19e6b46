from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Iterator

import typer

from ..run_dir import to_json
from .errors import exit_codes
from .options import JSON, SET


def lr_find(
    config: Path = typer.Argument(..., help="YAML config file.", show_default=False),
    set_: list[str] = SET,
    steps: int = typer.Option(100, "--steps", min=3, help="Optimizer steps, one lr each."),
    start_lr: float = typer.Option(1e-7, "--start-lr", min=0.0, help="The first (smallest) lr."),
    end_lr: float = typer.Option(10.0, "--end-lr", min=0.0, help="The last (largest) lr."),
    as_json: bool = JSON,
) -> None:
    """Learning-rate range test: the loss against an exponentially growing lr, a plot and a suggested lr.

    Writes <output.dir>/<name>-lr-find.png.

    Example: mltrain lr-find configs/quickstart.yaml
    """
    with exit_codes():
        from ..checks.lr_find import lr_find as run_test
        from ..plots import plot_lr_curve
        from ..config import load_config
        from ..errors import UserError

        if not 0 < start_lr < end_lr:
            raise UserError(f"--start-lr {start_lr:g} and --end-lr {end_lr:g}: need 0 < start < end")
        cfg = load_config(config, set_)
        plot = Path(cfg.output.dir) / f"{cfg.name}-lr-find.png"
        with _plot_writing(cfg.output.dir):  # refused before the test, not after it
            plot.parent.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=plot.parent).close()
        report = run_test(cfg, start_lr=start_lr, end_lr=end_lr, steps=steps)
        with _plot_writing(cfg.output.dir):
            report["plot"] = str(plot_lr_curve(report, plot))
    if as_json:
        typer.echo(to_json(report))
        return
    _print(report)


@contextlib.contextmanager
def _plot_writing(directory: str) -> Iterator[None]:
    from ..errors import UserError

    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write the plot into output.dir {directory}: {error.strerror}; "
                        "choose a writable one (--set output.dir=DIR)") from None


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    table = Table(title=f"lr range test: {report['steps']} steps of {report['batch_size']} samples, "
                        f"{report['optimizer']}", title_justify="left")
    table.add_column("lr", justify="right")
    table.add_column("smoothed loss", justify="right")
    shown = max(1, len(report["lrs"]) // 12)
    for lr, loss in list(zip(report["lrs"], report["losses"]))[::shown]:
        table.add_row(f"{lr:.2e}", f"{loss:.4f}")
    console.print(table)
    if report["suggested_lr"]:
        console.print(f"suggested lr {report['suggested_lr']:.2e} (steepest fall of the loss): "
                      f"--set optimizer.lr={report['suggested_lr']:.2g}")
    else:
        console.print("no suggestion: the loss did not fall over this range; try a wider --start-lr/--end-lr")
    console.print(f"plot written to {report['plot']}")
