"""Datasets by name. A builder returns in-memory tensors plus a spec of what they hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import DATASETS
from .dataset import DataSpec, InMemoryData

if TYPE_CHECKING:
    import torch

    from ..config import DataConfig

__all__ = ["DataSpec", "InMemoryData", "build_data"]


def build_data(cfg: DataConfig, seed: int, device: torch.device, state: dict | None = None) -> InMemoryData:
    """Load the configured dataset, split it with the seed and move it to the device.
    `state` is the data state a checkpoint stored (e.g. a text's vocabulary): passing it back
    rebuilds exactly the encoding the model was trained on."""
    entry = DATASETS[cfg.dataset]
    params = {name: getattr(cfg, name) for name in entry.params}
    data = entry.load()(val_split=cfg.val_split, seed=seed, **params, **(state or {}))
    return data.to(device)
