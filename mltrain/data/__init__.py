"""Datasets by name. A builder returns the splits (in memory, or streamed from disk for large
image folders) plus a spec of what they hold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import DATASETS
from .augment import Augment
from .dataset import DataSpec, InMemoryData

if TYPE_CHECKING:
    import torch

    from ..schema import DataSection

__all__ = ["DataSpec", "InMemoryData", "build_data"]

_APPLIED_HERE = ("augment",)  # dataset keys applied to whatever the source loaded, not by the source


def build_data(cfg: DataSection, seed: int, device: torch.device, state: dict | None = None) -> InMemoryData:
    """Load the configured dataset, split it with the seed, keep the first data.limit training
    samples, augment the training batches and move it all to the device.
    `state` is the data state a checkpoint stored (e.g. a text's vocabulary): passing it back
    rebuilds exactly the encoding the model was trained on."""
    keys = {name: value for name, value in cfg.own_values().items() if name not in _APPLIED_HERE}
    data = DATASETS[cfg.dataset].factory(val_split=cfg.val_split, seed=seed, **keys, **(state or {}))
    if cfg.limit is not None:
        data = data.limited(cfg.limit)
    augment = getattr(cfg, "augment", ())
    if augment:
        data = data.augmented(Augment(augment, seed, device))
    return data.to(device)
