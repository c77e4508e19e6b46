"""mltrain's exit codes, and the exceptions that map to them (see cli/errors.py)."""

import enum


class ExitCode(enum.IntEnum):
    DONE = 0
    FAILED = 1
    BAD_INPUT = 2
    INTERRUPTED = 130


# What each code means to a user; the exit-code reference is generated from it.
MEANINGS = {
    ExitCode.DONE: "done (and, for overfit-tiny and preflight, no check failed)",
    ExitCode.FAILED: "ran but failed: the loss became NaN or inf, a check failed, a checkpoint could not be "
                     "written, or (sweep) no trial completed",
    ExitCode.BAD_INPUT: "bad usage or input, before anything is lost: one line on stderr naming the file:line, "
                        "key or flag and what to do; `MLTRAIN_DEBUG=1` adds the traceback",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C or SIGTERM; `fit` first writes `checkpoints/last.pt` (during "
                          "start-up it stops before writing anything)",
}


class UserError(Exception):
    """Bad usage or bad input (config, data, checkpoint). Exit code 2, one clear message."""


class ConfigError(UserError):
    """A problem in a config, located by file:line (or --set) and dotted key."""

    def __init__(self, where: str, key: str, problem: str):
        self.where, self.key, self.problem = where, key, problem
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{key}: {problem}" if key else f"{prefix}{problem}")


class TrainingFailed(Exception):
    """The run went wrong (non-finite loss, a failed sanity check). Exit code 1."""


class RunComplete(Exception):
    """Resuming a run that has already completed: nothing to do. Exit code 0 with the message, so
    that a requeued job does not fail."""


class StopTraining(Exception):
    """Raised by a sink to end a run early and on purpose (a pruned sweep trial): the run's
    summary gets `status` and `reason`; nothing is reported as an error."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason
