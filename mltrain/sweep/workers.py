"""Workers: each claims and runs trials until the sweep has none left; --jobs N runs N of them
as processes of this machine, each on its own share of the CPU cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from ..distributed import WORKER_MODULE
from ..errors import TrainingFailed, UserError
from ..registry import trusts_stored_code
from ..signals import StopRequested, stop_on_signals
from .study import Sweep, default_storage

IDLE_POLL_S = 1.0  # an idle worker looks this often for a trial to claim or a dead one to retry


def work(sweep: Sweep) -> None:
    """Run trials until none waits and none runs anywhere: a worker that waits for the others
    also retries the trial of one that dies."""
    from .trial import run_trial  # torch, which a process that only starts workers never needs

    try:
        while True:
            claimed = sweep.claim()
            if claimed is not None:
                print(run_trial(sweep, claimed), flush=True)
            elif sweep.unfinished():
                time.sleep(IDLE_POLL_S)
            else:
                return
    except (StopRequested, KeyboardInterrupt):
        print(f"sweep stopped; to continue it: mltrain sweep --resume {sweep.directory}", file=sys.stderr, flush=True)
        raise


def work_in_processes(sweep: Sweep, jobs: int) -> None:
    """`jobs` worker processes (`mltrain sweep --join DIR --worker`); returns when all have ended."""
    command = [sys.executable, *WORKER_MODULE, "sweep", "--join", str(sweep.directory), "--worker"]
    if sweep.storage_url != default_storage(sweep.directory):
        command += ["--storage", sweep.storage_url]
    if sweep.from_users_config or trusts_stored_code():  # the workers read the same config back from the study
        command.append("--trust-code")
    threads = (yaml.safe_load(sweep.definition.base_config).get("train") or {}).get("threads")
    shares = _core_shares(jobs) if threads is None else [None] * jobs  # a config's own count stands
    processes = []
    try:
        with stop_on_signals() as stop:
            for share in shares:
                processes.append(subprocess.Popen(command))
                if share:
                    os.sched_setaffinity(processes[-1].pid, share)  # before the worker picks its threads
            while any(process.poll() is None for process in processes):
                stop.check()
                time.sleep(0.2)
    except BaseException:
        for process in processes:
            if process.poll() is None:
                process.terminate()  # SIGTERM: the worker writes its trial's last.pt and stops
        for process in processes:
            process.wait()
        raise
    codes = [process.returncode for process in processes]
    if 130 in codes:
        raise StopRequested("a worker process was interrupted")
    if any(codes) and sweep.unfinished():  # a worker that died while the others finished its trials is no matter
        failure = UserError if 2 in codes else TrainingFailed
        raise failure(f"worker processes ended with exit codes {codes} (their messages are above); "
                      f"to finish the sweep: mltrain sweep --resume {sweep.directory}")


def _core_shares(jobs: int) -> list[set[int] | None]:
    """Cores split between the workers (torch then runs one thread per core it may use);
    no split when there are fewer cores than workers."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < jobs:
        return [None] * jobs
    return [set(cores[index::jobs]) for index in range(jobs)]
