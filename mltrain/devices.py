"""Device and CPU-thread choice, done on purpose and reported."""

from __future__ import annotations

import os

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


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads. The default leaves one core free: on small machines,
    torch's busy-waiting threads slow to a crawl when another process shares their cores."""
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores - 1)
    torch.set_num_threads(threads)
    return threads
