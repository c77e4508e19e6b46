"""How an mltrain process ends. One that held torch.distributed's threads (a worker's process
group, the launcher's rendezvous store) ends with os._exit once its output is flushed, as Python's
multiprocessing ends its children: everything it writes is closed by then, and the interpreter's
teardown can otherwise abort it (std::terminate from such a thread still running at exit)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

_held_process_threads = False  # set by the `fit --nproc` launcher


def launching_workers() -> None:
    global _held_process_threads
    _held_process_threads = True


def is_distributed_worker() -> bool:
    """Whether torchrun or `fit --nproc` started this process as one of several."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def abrupt() -> bool:
    return _held_process_threads or is_distributed_worker()


def exit_now(code: int) -> NoReturn:
    """Exit with `code` once stdout and stderr are flushed, skipping the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not keep the process alive
            stream.flush()
    os._exit(code)
