"""A sweep's study: where it is stored, what it searches, and trials claimed exactly once.

A new sweep creates its N trials at once, as WAITING tickets (each grid point's parameters,
or none for the sampler to draw). A worker claims a ticket by moving it to RUNNING, a change
the database makes once, so N trials run exactly once however many workers join, on this
machine or others. SQLite cannot lock the row it reads, so on SQLite claims also hold a file
lock beside the database.

A trial whose worker died (kill -9, Ctrl-C, a lost machine) is left RUNNING. A worker that
sees the death marks it FAIL and queues a copy with the same parameters (Optuna's
RetryHeartbeatStaleTrialCallback), which runs from the start in its own run directory: at
once for a process of this machine that no longer exists, after GRACE_S without a heartbeat
for a worker elsewhere. The dead attempt stays in the study, shown as interrupted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import typing
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import optuna
import yaml
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from ..errors import UserError
from ..registry import from_stored
from .space import Param, parse_space

HEARTBEAT_S = 10  # a running trial's worker records a heartbeat this often, in seconds
GRACE_S = 120  # a trial this long without a heartbeat belongs to a dead worker, in seconds
SQLITE_BUSY_TIMEOUT_S = 60  # a write waits this long for another process's write to end
_DEFINITION = "mltrain_sweep"  # the study's user attribute that holds the Definition


@contextlib.contextmanager
def without_experimental_warnings() -> Iterator[None]:
    """Heartbeats, their retry and the matplotlib plots have been in Optuna since 2.x and are still
    marked experimental; their warning says nothing a sweep's user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own line per trial
with without_experimental_warnings():
    _RETRY = RetryHeartbeatStaleTrialCallback()


@dataclass(frozen=True)
class Definition:
    """Everything a worker needs, stored with the study: joining takes only the storage."""
    base_config: str  # the resolved config (YAML) every trial starts from
    search: list[str]  # the space, one KEY=DIST spec each
    trials: int  # how many trials the sweep runs
    sampler: str  # tpe | random | grid
    pruner: str  # median | hyperband | none
    seed: int  # the samplers' seed (the config's seed)
    monitor: str  # the objective: train.monitor's best value over the run
    direction: str  # minimize | maximize, from train.monitor's mode


def default_storage(directory: Path) -> str:
    return f"sqlite:///{(directory / 'study.db').resolve()}"


def _shown(url: str) -> str:
    """The URL with its password hidden: what files and messages may hold."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _open_storage(url: str) -> RDBStorage:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        sqlite = make_url(url).get_backend_name() == "sqlite"
    except ArgumentError:
        raise UserError(f"--storage {url}: not a database URL; give one SQLAlchemy takes, e.g. "
                        "sqlite:///sweep.db or postgresql://user@host/db") from None
    engine = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if sqlite else None
    try:
        with without_experimental_warnings():
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=_RETRY)
    except (ImportError, SQLAlchemyError, optuna.exceptions.StorageInternalError) as error:
        raise UserError(f"--storage {_shown(url)}: cannot open it: {str(error).splitlines()[0]}") from None


def make_sampler(name: str, seed: int, number: int) -> optuna.samplers.BaseSampler:
    """Trial `number`'s sampler: its own random stream from (seed, number), so that workers in
    parallel draw differently and a one-worker sweep repeats exactly."""
    seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0])
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every ticket arrives with its parameters fixed


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner()  # after 5 finished trials, below the median at a validation
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)  # resource: validations done
    return optuna.pruners.NopPruner()


class Sweep:
    """A study in its storage, and the directory where this machine writes its trials
    (default: <output.dir of the config>/<study name>)."""

    def __init__(self, storage_url: str, study_name: str, directory: Path | None = None):
        self.storage_url, self.study_name = storage_url, study_name
        self.storage = _open_storage(storage_url)
        try:
            self.study_id = self.storage.get_study_id_from_name(study_name)
        except KeyError:
            raise UserError(f"no study named {study_name} in {_shown(storage_url)}") from None
        stored = self.storage.get_study_user_attrs(self.study_id).get(_DEFINITION)
        if stored is None:
            raise UserError(f"study {study_name} in {_shown(storage_url)} has no complete sweep definition: it was "
                            "stopped while being created, or not made by mltrain sweep; start a new sweep")
        self.definition = _checked_definition(stored, f"study {study_name} in {_shown(storage_url)}")
        self.from_users_config = False  # True when this process made it from the user's own config
        self.params: list[Param] = parse_space([(spec, f"study {study_name}: {spec}") for spec in
                                               self.definition.search])
        if directory is None:
            output_dir = (yaml.safe_load(self.definition.base_config).get("output") or {}).get("dir", "runs")
            directory = Path(output_dir) / study_name
        self.directory = directory
        from sqlalchemy.engine import make_url

        database = make_url(storage_url)
        self.lock_path = Path(f"{database.database}.lock") \
            if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:") else None

    @property
    def base_config(self) -> Path:
        return self.directory / "base.yaml"

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage,
                                 pruner=make_pruner(self.definition.pruner))

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def unfinished(self) -> int:
        return len(self.trials((TrialState.WAITING, TrialState.RUNNING)))

    def write_files(self) -> None:
        """base.yaml, which trials load, and sweep.json, which --resume reads."""
        self.base_config.write_text(self.definition.base_config, encoding="utf-8")
        recorded = None if self.storage_url == default_storage(self.directory) else _shown(self.storage_url)
        (self.directory / "sweep.json").write_text(
            json.dumps({"study": self.study_name, "storage": recorded}, indent=2) + "\n", encoding="utf-8")

    # --- claiming trials --------------------------------------------------------------------

    def claim(self) -> optuna.Trial | None:
        """Retry the trials of dead workers, then take a waiting trial (None: none waits)."""
        study = self.study()
        with self._claim_lock():
            self._retry_dead_workers()
            with without_experimental_warnings():
                optuna.storages.fail_stale_trials(study)  # a worker elsewhere silent past GRACE_S
            # As Study.ask takes a waiting trial, without ever creating one: the tickets are the count.
            for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                trial_id = waiting._trial_id
                try:
                    if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                        continue  # another worker took it first
                except UpdateFinishedTrialError:
                    continue
                self.storage.set_trial_user_attr(trial_id, "worker", f"{socket.gethostname()}:{os.getpid()}")
                self.storage.record_heartbeat(trial_id)
                study.sampler = make_sampler(self.definition.sampler, self.definition.seed, waiting.number)
                return optuna.Trial(study, trial_id)
        return None

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        if self.lock_path is None:  # a server database locks the rows it changes
            yield
            return
        try:
            handle = open(self.lock_path, "a")
        except OSError as error:
            raise UserError(f"{self.lock_path}: cannot open the sweep's lock file ({error.strerror}); remove what "
                            "stands there (it must be a writable file, or absent)") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _retry_dead_workers(self) -> None:
        for trial in self.trials((TrialState.RUNNING,)):
            if not self._worker_is_dead(trial.user_attrs.get("worker")):
                continue
            try:
                if self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    _RETRY(self.study(), self.storage.get_trial(trial._trial_id))
            except UpdateFinishedTrialError:
                pass  # another worker retried it

    def _worker_is_dead(self, worker: str | None) -> bool:
        if worker is None:  # under the file lock, only a claim cut short leaves a running trial unowned
            return self.lock_path is not None
        host, _, pid = worker.rpartition(":")
        return host == socket.gethostname() and not _process_alive(int(pid))

    @contextlib.contextmanager
    def heartbeat(self, trial: optuna.Trial) -> Iterator[None]:
        """Record the trial's heartbeat every HEARTBEAT_S while it runs."""
        trial_id = trial._trial_id
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(Exception):  # a beat lost to a busy database is made up by the next
                    self.storage.record_heartbeat(trial_id)

        thread = threading.Thread(target=beat, name="sweep-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _checked_definition(stored: Any, where: str) -> Definition:
    """The stored sweep definition, validated like a config: every field, of its type, no other."""
    from pydantic import TypeAdapter, ValidationError

    expected = [field.name for field in fields(Definition)]
    problems = [] if isinstance(stored, dict) else ["not a mapping"]
    if not problems:
        problems = [f"missing {name}" for name in expected if name not in stored]
        problems += [f"unknown {name}" for name in map(str, stored) if name not in expected]
    if not problems:
        for name, hint in typing.get_type_hints(Definition).items():
            try:
                TypeAdapter(hint).validate_python(stored[name], strict=True)
            except ValidationError as error:
                problems.append(f"{name}: {error.errors()[0]['msg']}")
    if not problems:
        return Definition(**stored)
    raise UserError(f"{where}: its sweep definition is damaged or was edited ({'; '.join(problems[:3])}); start a "
                    "new sweep")


def create_sweep(directory: Path, storage_url: str | None, definition: Definition,
                 tickets: list[dict[str, Any]]) -> Sweep:
    """A new study holding the definition and one waiting trial per ticket."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UserError(f"--sweep-dir {directory} already exists and is not empty; continue its sweep with "
                        f"mltrain sweep --resume {directory}, or choose a new directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the sweep directory {directory}: {error.strerror}") from None
    url, study = storage_url or default_storage(directory), None
    try:
        storage = _open_storage(url)
        try:
            study = optuna.create_study(study_name=directory.name, storage=storage, direction=definition.direction)
        except DuplicatedStudyError:
            raise UserError(f"--storage {_shown(url)} already holds a study named {directory.name}; "
                            f"join it with mltrain sweep --join {directory.name} --storage URL, or choose "
                            "another --sweep-dir") from None
        for params in tickets:
            study.enqueue_trial(params)
        study.set_user_attr(_DEFINITION, asdict(definition))  # last: a study without it was cut short
    except BaseException:  # nothing ran: leave nothing behind
        if study is not None:
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=directory.name, storage=storage)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    sweep = Sweep(url, directory.name, directory)
    sweep.from_users_config = True
    sweep.write_files()
    return sweep


def open_sweep(target: str, storage_url: str | None = None, directory: Path | None = None) -> Sweep:
    """An existing sweep: a sweep directory (its sweep.json names the study and storage), or a
    study name in --storage; trials of this machine go to `directory` (default: the sweep
    directory, else <output.dir>/<study name>)."""
    record_path = Path(target) / "sweep.json"
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            study_name, recorded = record["study"], record["storage"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{record_path}: unreadable; it names the sweep's study and storage") from None
        if storage_url is None and recorded is not None and "***" in recorded:
            raise UserError(f"{record_path}: the storage's password is not kept on disk; give the URL again "
                            "with --storage URL")
        storage_url = storage_url or recorded or default_storage(Path(target))
        directory = directory or Path(target)
    elif storage_url is None:
        raise UserError(f"{target}: not a sweep directory (no sweep.json); give one, or a study name with "
                        "--storage URL")
    else:
        study_name = target
    sweep = Sweep(storage_url, study_name, directory)
    try:
        sweep.directory.mkdir(parents=True, exist_ok=True)
        sweep.write_files()
    except OSError as error:
        raise UserError(f"cannot write into the sweep directory {sweep.directory}: {error.strerror}") from None
    from ..config import load_config

    with from_stored():  # anyone who can write to the storage wrote this config: checked once, before any trial
        load_config(sweep.base_config)
    return sweep
