"""Ctrl-C and SIGTERM end training at the next step boundary, never in the middle of one; before
the loop, where nothing is written yet, they end it at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class StopRequested(BaseException):
    """A stop signal arrived; the loop saves a checkpoint and exits with code 130. Like
    KeyboardInterrupt, it may come from anywhere at start-up: no `except Exception` takes it."""


class _StopFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.now = False  # whether a stop raises StopRequested where the program stands

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def check(self) -> None:
        if self.signal_name:
            raise StopRequested(self.signal_name)


_installed: _StopFlag | None = None  # the main thread's flag while a stop_on_signals block is open


@contextlib.contextmanager
def stop_on_signals(at_once: bool = False) -> Iterator[_StopFlag]:
    """The first SIGINT/SIGTERM sets a flag the loop checks after each step (with `at_once`, it
    raises StopRequested instead, for start-up, which writes nothing); a second SIGINT interrupts
    at once. Nested blocks share the outermost's handler and flag, each with its own mode for its
    duration: a command installs it from its first line to its last, the loop defers within."""
    global _installed
    if threading.current_thread() is not threading.main_thread():  # signals cannot be caught here
        yield _StopFlag()
        return
    if _installed is not None:
        flag, outer_mode = _installed, _installed.now
        if at_once:
            flag.check()
        flag.now = at_once
        try:
            yield flag
        finally:
            flag.now = outer_mode
        return

    flag = _StopFlag()
    flag.now = at_once
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in watched}

    def request_stop(signum, frame):
        flag.signal_name = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if flag.now:
            raise StopRequested(flag.signal_name)

    for sig in watched:
        signal.signal(sig, request_stop)
    _installed = flag
    try:
        yield flag
    finally:
        _installed = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)
