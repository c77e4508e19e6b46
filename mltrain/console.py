"""What a person watching sees: a rich progress bar per epoch on a terminal, plain lines
otherwise. The loop reports numbers; this module owns the console. Every line is also
written to the run's train.log."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

# The columns an epoch's bar drops, in this order, when the terminal is too narrow for all of them,
# with the characters each takes; the step count, the loss and the ETA always stay.
_OPTIONAL = {"elapsed": 8, "lr": 11, "speed": 19}
_BAR_WIDTHS = (10, 40)  # the bar's narrowest and widest, in characters


def _bar_columns(width: int, epochs: int, steps: int) -> list[ProgressColumn]:
    """The columns of an epoch's bar that fit a terminal `width` characters wide."""
    essential = [f"epoch {epochs}/{epochs}", f"{steps}/{steps}", "loss 00.0000", "eta", "0:00:00"]
    used = sum(len(text) + 1 for text in essential)  # each with the space after it
    kept = dict(_OPTIONAL)
    for name in _OPTIONAL:
        if used + sum(size + 1 for size in kept.values()) + _BAR_WIDTHS[0] <= width:
            break
        del kept[name]
    used += sum(size + 1 for size in kept.values())
    optional = {"lr": TextColumn("lr {task.fields[lr]}"), "speed": TextColumn("{task.fields[speed]} samples/s"),
                "elapsed": TimeElapsedColumn()}
    return [TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(bar_width=max(_BAR_WIDTHS[0], min(_BAR_WIDTHS[1], width - used - 1))),
            MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            *(column for name, column in optional.items() if name in kept),
            TextColumn("eta"), TimeRemainingColumn()]


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4g}" for key, value in metrics.items())


class ProgressView:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal and not quiet
        self._log: Callable[[str], None] | None = None
        self._progress: Progress | None = None
        self._task = None

    def attach_log(self, log: Callable[[str], None]) -> None:
        self._log = log

    def info(self, text: str, always: bool = False) -> None:
        """A line above the bar (or on its own line) and in train.log."""
        if not self.quiet or always:
            target = self._progress.console if self._progress else self.console
            target.print(text, markup=False)
        if self._log:
            self._log(text)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if not self.live:
            return
        self._progress = Progress(*_bar_columns(self.console.width, epochs, steps), console=self.console,
                                  transient=True)
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=done, epoch=f"{epoch}/{epochs}",
                                             loss="-", lr="-", speed="-")

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def show(self, loss: float, lr: float, samples_per_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{samples_per_s:,.0f}")

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextlib.contextmanager
def counting(total: int, what: str, shown: bool = True) -> Iterator[Callable[[int], None]]:
    """A transient bar on stderr counting `total` items, when `shown` and stderr is a terminal
    (stdout stays free for results); yields the function that advances it by some items."""
    console = Console(stderr=True, highlight=False)
    if not shown or not console.is_terminal:
        yield lambda count: None
        return
    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda count: progress.advance(task, count)
