"""The sinks of one run, in the order the loop calls them: the run files, the progress view, the
configured loggers, then the caller's own. Only rank 0 writes or prints; the other ranks get a
silent view and no sinks."""

from __future__ import annotations

from typing import Sequence

from ..config import Config
from ..console import ProgressView
from ..monitor import Monitor
from ..run_dir import RunDir
from . import Sink
from .loggers import logger_sinks
from .progress import Progress
from .run_files import RunFiles


def run_sinks(cfg: Config, run: RunDir, monitor: Monitor, quiet: bool, is_main: bool,
              extra: Sequence[Sink] = ()) -> tuple[Progress, list[Sink]]:
    """The progress sink (for the loop's info lines and live view) and every sink of the run."""
    view = ProgressView(quiet or not is_main)
    progress = Progress(view, monitor)
    if not is_main:
        return progress, []
    files = RunFiles(run)
    view.attach_log(files.log)
    return progress, [files, progress, *logger_sinks(cfg, run.path), *extra]
