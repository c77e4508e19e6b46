"""Map mltrain's exceptions to exit codes: 2 bad input, 1 failed run, 130 interrupted."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import typer

from ..errors import TrainingFailed, UserError
from ..signals import StopRequested


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """User errors become one line on stderr (a traceback only with MLTRAIN_DEBUG=1)."""
    debug = os.environ.get("MLTRAIN_DEBUG") == "1"
    try:
        yield
    except UserError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    except TrainingFailed as error:
        if debug:
            raise
        print(f"failed: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    except (StopRequested, KeyboardInterrupt):
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
