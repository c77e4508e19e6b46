"""Python's cyclic garbage collector while a command starts.

A command's start-up builds most of the objects its process will hold until it ends (torch and
its compiler, the classes of pydantic, rich and the config): some 400,000, which every full
collection scans again as their number grows, six times in the quickstart's `fit`. From the
command line, no collection runs until the command's learner is built; then one collection
frees start-up's garbage, what remains is set aside for good (`gc.freeze`, as servers do before
they fork workers) and collection resumes with only what comes after in its sight.

Reading the data comes before the learner, so what it leaves in cycles waits for that one
collection. A command that builds no learner of its own but runs long (the `--nproc` launcher,
prepare-text) or builds one per trial (a sweep: a frozen trial would outlive itself) resumes
collection as its work starts, freezing nothing; the others that build none (config, list,
runs, compare) end before it would matter. A program that calls mltrain's API keeps its
collector as it set it.
"""

from __future__ import annotations

import gc

_deferred = False


def defer_until_started() -> None:
    """From the command line's entry: no collection until `started()` or `resume()`."""
    global _deferred
    if gc.isenabled():
        gc.disable()
        _deferred = True


def started() -> None:
    """A learner is built, start-up is over: after `defer_until_started`, start-up's garbage is
    collected, what remains is frozen out of every later collection, and collection resumes."""
    global _deferred
    if _deferred:
        _deferred = False
        gc.collect()
        gc.freeze()
        gc.enable()


def resume() -> None:
    """Collection resumes at once, nothing frozen (see the module's text for who calls this)."""
    global _deferred
    if _deferred:
        _deferred = False
        gc.enable()
