"""Ctrl-C and SIGTERM end training at the next step boundary, never in the middle of one."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


class StopRequested(Exception):
    """A stop signal arrived; the loop saves a checkpoint and exits with code 130."""


class _StopFlag:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def check(self) -> None:
        if self.signal_name:
            raise StopRequested(self.signal_name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[_StopFlag]:
    """The first SIGINT/SIGTERM sets a flag the loop checks after each step; a second
    SIGINT interrupts at once."""
    flag = _StopFlag()
    watched = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {sig: signal.getsignal(sig) for sig in watched}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield flag
        return

    def request_stop(signum, frame):
        flag.signal_name = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        for sig in watched:
            signal.signal(sig, request_stop)
    except ValueError:
        yield flag
        return
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
