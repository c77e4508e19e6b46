"""Datasets by name. A builder returns the splits (in memory, or streamed from disk for large
image folders) plus a spec of what they hold."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import TYPE_CHECKING, Any

from ..registry import DATASETS, Component
from .augment import Augment
from .dataset import DataSpec, DataSplits

if TYPE_CHECKING:
    import torch

    from ..schema import DataSection

__all__ = ["DataSpec", "DataSplits", "TARGET_SCALE", "build_data", "checked_state", "target_scale"]

_APPLIED_HERE = ("augment",)  # dataset keys applied to whatever the source loaded, not by the source
TARGET_SCALE = "target_scale"  # data-state key: regression targets' training mean and std, per output


def target_scale(y: torch.Tensor) -> dict[str, list[float]]:
    """Mean and (population) std of training targets (N, *target_shape), per output, flattened;
    an output that never varies gets std 1."""
    y = y.double()
    std = y.std(dim=0, correction=0)
    return {"mean": y.mean(dim=0).flatten().tolist(), "std": std.where(std > 0, 1.0).flatten().tolist()}


def checked_state(component: Component, state: dict[str, Any]) -> dict[str, Any]:
    """A stored data state, validated as its dataset's builder declares it, like a config: only
    the builder's parameters that are no config key, each of its declared type. ValueError
    names what does not fit. A dataset of your own (`**keys`) keeps whatever state it returns."""
    from pydantic import TypeAdapter

    parameters = inspect.signature(component.factory).parameters
    if any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
        return state
    declared = set(parameters) - {"val_split", "seed"} - set(component.keys)
    unknown = sorted(map(str, set(state) - declared))
    if unknown:
        raise ValueError(f"the dataset {component.name} keeps no state named {', '.join(unknown)}")
    try:
        hints = typing.get_type_hints(getattr(component.factory, "func", component.factory))  # a partial's function
    except Exception:  # annotations that do not resolve: the names are checked, the types are not
        hints = {}
    return {name: TypeAdapter(hints.get(name, Any)).validate_python(value) for name, value in state.items()}


def build_data(cfg: DataSection, seed: int, device: torch.device, state: dict | None = None,
               published_statistics: Any = None) -> DataSplits:
    """Load the configured dataset, split it with the seed, keep the first data.limit training
    samples, augment the training batches and move it all to the device. Regression data also
    gets its training targets' `target_scale` in its state (the targets themselves stay in
    their units; the head standardises them).
    `state` is the data state a checkpoint stored (e.g. a text's vocabulary), as `checked_state`
    passed it: given back, it rebuilds exactly the encoding the model was trained on.
    `published_statistics`: the starting weights' normalisation, for `data.normalize: auto`."""
    keys = {name: value for name, value in cfg.own_values().items() if name not in _APPLIED_HERE}
    if published_statistics is not None and keys.get("normalize") == "auto":
        keys["normalize"] = published_statistics
    source_state = {name: value for name, value in (state or {}).items() if name != TARGET_SCALE}
    data = DATASETS[cfg.dataset].factory(val_split=cfg.val_split, seed=seed, **keys, **source_state)
    if cfg.limit is not None:
        data = data.limited(cfg.limit)
    if data.spec.num_classes is None:
        scale = (state or {}).get(TARGET_SCALE) or target_scale(data.splits["train"][1])
        data = dataclasses.replace(data, state={**data.state, TARGET_SCALE: scale})
    augment = getattr(cfg, "augment", ())
    if augment:
        data = data.augmented(Augment(augment, seed, device))
    return data.to(device)
