"""Python's cyclic garbage collector while a command starts.

A command's start-up builds most of the objects its process will hold until it ends (torch and
its compiler, the classes of pydantic, rich and the config): some 400,000, which every full
collection scans again as their number grows. Collected as they come, they cost the quickstart's
`fit` six full collections, half a second of a four-second process. From the command line, no
collection runs until start-up is over; what start-up built is then set aside for good
(`gc.freeze`, as servers do before they fork workers) and collection resumes, with only what
comes after in its sight. A program that calls mltrain's API keeps its collector as it set it.
"""

from __future__ import annotations

import gc

_deferred = False


def defer_until_started() -> None:
    """From the command line's entry: no collection until `started()`."""
    global _deferred
    if gc.isenabled():
        gc.disable()
        _deferred = True


def started() -> None:
    """Start-up is over (a learner is built): after `defer_until_started`, what exists now is frozen
    out of every later collection, and collection resumes. Otherwise nothing."""
    global _deferred
    if _deferred:
        _deferred = False
        gc.freeze()
        gc.enable()
