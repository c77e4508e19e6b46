"""One trial: draw its parameters, train it with fit() in its own run directory, tell the study."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import optuna
from optuna.trial import TrialState

from ..config import load_config
from ..errors import StopTraining, TrainingFailed, UserError
from ..fitting import fit
from ..registry import from_stored
from ..signals import StopRequested
from ..sinks import Record, Sink
from .study import Sweep


class ReportToTrial(Sink):
    """Each validation's monitored value goes to the trial, step = validations so far (the same
    across batch sizes); the pruner may end the run there."""

    def __init__(self, trial: optuna.Trial, metric: str):
        self.trial, self.metric, self.validations = trial, metric, 0

    def validation(self, record: Record) -> None:
        self.validations += 1
        value = record.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, self.validations)
        if self.trial.should_prune():
            raise StopTraining("pruned", f"at validation {self.validations}, {self.metric} {value:.4g} fell behind "
                                         "the other trials' values there")


def run_trial(sweep: Sweep, trial: optuna.Trial) -> str:
    """Run a claimed trial to its end and record it in the study; returns one line saying how it went.
    A failed trial (non-finite loss, a combination the config refuses) is recorded FAIL with its
    message; only a stop request (Ctrl-C, SIGTERM), or a storage that cannot record the end (a
    full disk: UserError), leaves it RUNNING, for a later worker to retry."""
    with _recording(sweep, trial):
        return _run(sweep, trial)


@contextlib.contextmanager
def _recording(sweep: Sweep, trial: optuna.Trial) -> Iterator[None]:
    """A study storage that refuses a write (a full disk, a database gone) is one line saying how to go on."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as error:
        detail = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise UserError(f"trial {trial.number}: the study's storage refused to record it ({detail}); free disk "
                        f"space or fix the database, then continue with mltrain sweep --resume {sweep.directory}") \
            from None


def _run(sweep: Sweep, trial: optuna.Trial) -> str:
    definition, study = sweep.definition, trial.study
    run_dir = sweep.directory / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    name = f"trial {trial.number}"
    with sweep.heartbeat(trial):
        try:
            overrides = [param.override(param.suggest(trial)) for param in sweep.params]
            print(f"{name}: " + "  ".join(overrides), flush=True)
            with from_stored():  # the study's config: import paths only as the user allowed them
                cfg = load_config(sweep.base_config, overrides)
            result = fit(cfg, run_dir=run_dir, quiet=True, sinks=[ReportToTrial(trial, definition.monitor)])
        except StopTraining as stop:
            trial.set_user_attr("stopped", stop.reason)
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            return f"{name} {stop.status}: {stop.reason}"
        except StopRequested:
            raise
        except Exception as error:  # whatever ended this trial, the sweep goes on and the table shows why
            return _failed(study, trial, name, _message(error))
        value: Any = result.summary["best"]["value"]
        if value is None or not math.isfinite(value):
            return _failed(study, trial, name, f"no finite {definition.monitor} was reached")
        study.tell(trial, value, skip_if_finished=True)
        return f"{name} complete: {definition.monitor} {value:.4g}"


def _message(error: Exception) -> str:
    """mltrain's own errors say what happened; any other also needs its type (a KeyError's text is the key)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return text if isinstance(error, (UserError, TrainingFailed)) else f"{type(error).__name__}: {text}".rstrip(": ")


def _failed(study: optuna.Study, trial: optuna.Trial, name: str, message: str) -> str:
    trial.set_user_attr("error", message)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return f"{name} failed: {message}"
