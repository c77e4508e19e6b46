"""The start every command shares: CPU threads, determinism, seeds, the data on the device, and the learner."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .data import TARGET_SCALE, DataSplits, build_data
from .devices import set_threads
from .build import build_learner
from .learner import Learner
from .weights import published_normalization


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels when asked; otherwise let cuDNN pick the fastest ones."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():  # the call imports inductor (~1 s)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def start(cfg: Config, device: torch.device, processes: int = 1) -> int:
    """Threads, determinism and seeds, before any weight is drawn or data is read; returns
    torch's CPU thread count as chosen."""
    threads = set_threads(cfg.train.threads, processes)
    configure_determinism(cfg.train.deterministic, device)
    seed_everything(cfg.seed)
    return threads


@dataclass
class Prepared:
    data: DataSplits
    learner: Learner
    threads: int  # torch's CPU threads, as chosen


def prepare(cfg: Config, device: torch.device, processes: int = 1) -> Prepared:
    """A fresh start from a config: the data and a newly initialised learner for it."""
    threads = start(cfg, device, processes)
    data = build_data(cfg.data, cfg.seed, device, published_statistics=published_normalization(cfg))
    return Prepared(data, build_learner(cfg, data.spec, device, target_scale=data.state.get(TARGET_SCALE)), threads)
