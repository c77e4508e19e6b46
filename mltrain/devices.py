"""Device and CPU-thread choice, done on purpose and reported."""

from __future__ import annotations

import os
import sys
import time

import torch

from .errors import UserError


def pick_device(name: str) -> torch.device:
    """`auto` takes cuda, then mps, then cpu; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' asked for, but this machine has no CUDA GPU usable by torch; "
                        "use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device '{name}' asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{name}' asked for, but MPS is not available here; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    return device


PROBE_SECONDS = 0.05  # how long the default samples the machine's load before choosing threads


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _busy_cores(seconds: float = PROBE_SECONDS) -> float | None:
    """Cores kept busy by other processes right now, from two reads of /proc/stat; None elsewhere."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total_before, idle_before = sample()
        time.sleep(seconds)
        total_after, idle_after = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total_after - total_before
    return (1 - (idle_after - idle_before) / elapsed) * (os.cpu_count() or 1) if elapsed > 0 else None


def default_threads(cores: int) -> int:
    """Every free core: torch's busy-waiting threads slow to a crawl (tens of times) when another
    process holds one of their cores, and are about 15 % faster with every core when none does.
    So the cores other processes keep busy during a short probe are left to them."""
    busy = _busy_cores()
    if busy is None:
        return max(1, cores - 1)
    return max(1, min(cores, round(cores - busy)))


def set_threads(threads: int | None, processes: int = 1) -> int:
    """Set torch's intra-op CPU threads: as asked (at most one per usable core), or `default_threads`;
    with `processes` training on this machine, each takes an equal share of the cores."""
    cores = usable_cores()
    if threads is None:
        threads = default_threads(cores) if processes == 1 else max(1, cores // processes)
    elif threads > cores:
        print(f"warning: train.threads {threads} is more than the {cores} usable cores; using {cores}",
              file=sys.stderr)
        threads = cores
    torch.set_num_threads(threads)
    return threads
