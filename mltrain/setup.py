"""The start every command shares: CPU threads, seeds, the data on the device, and the learner."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .data import InMemoryData, build_data
from .devices import set_threads
from .learner import Learner


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    data: InMemoryData
    learner: Learner
    threads: int  # torch's CPU threads, as chosen


def prepare(cfg: Config, device: torch.device, data_state: dict | None = None) -> Prepared:
    """Threads, seeds (before any weight is drawn), the data and a learner for it. `data_state`
    is what a checkpoint stored, so the data is encoded as the model was trained on it."""
    threads = set_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    data = build_data(cfg.data, cfg.seed, device, data_state)
    return Prepared(data, Learner.build(cfg, data.spec, device), threads)
