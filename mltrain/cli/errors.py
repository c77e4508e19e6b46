"""Map mltrain's exceptions to exit codes: 2 bad input, 1 failed run, 130 interrupted."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import Iterator

import typer

from ..errors import ExitCode, RunComplete, TrainingFailed, UserError
from ..registry import trusting_stored_code
from ..signals import StopRequested


@contextlib.contextmanager
def exit_codes(trust_code: bool = False) -> Iterator[None]:
    """User errors become one line on stderr; MLTRAIN_DEBUG=1 adds the traceback above it and
    keeps the exit code. `trust_code`: the user passed --trust-code (stored configs may name
    import paths)."""
    try:
        with trusting_stored_code(trust_code):
            yield
    except RunComplete as done:
        if int(os.environ.get("RANK", "0")) == 0:
            print(done)
        raise typer.Exit(ExitCode.DONE) from None
    except UserError as error:
        _fail(f"error: {error}", ExitCode.BAD_INPUT)
    except TrainingFailed as error:
        _fail(f"failed: {error}", ExitCode.FAILED)
    except (StopRequested, KeyboardInterrupt):
        _fail("interrupted", ExitCode.INTERRUPTED)
    except typer.Exit:
        raise
    except Exception as error:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        # In a job, a peer that died leaves the others a page of collective-library traceback;
        # one line each says it (MLTRAIN_DEBUG=1 keeps the traceback), and the launcher names the cause.
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        _fail(f"failed: {type(error).__name__}: {detail}"[:300], ExitCode.FAILED)


def _fail(message: str, code: int) -> None:
    """One line on stderr. In a distributed job rank 0 speaks for all: bad input is the same on
    every process, so the others keep it to themselves; what else ends them names the rank."""
    rank = int(os.environ.get("RANK", "0"))
    if os.environ.get("MLTRAIN_DEBUG") == "1":
        traceback.print_exc()
    if rank == 0:
        print(message, file=sys.stderr)
    elif code not in (ExitCode.BAD_INPUT, ExitCode.INTERRUPTED):  # bad input and stops are the same on every process
        print(f"rank {rank}: {message}", file=sys.stderr)
    raise typer.Exit(int(code)) from None
