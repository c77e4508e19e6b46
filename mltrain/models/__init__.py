"""Architectures by name; the builder unpacks the model config into plain arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ARCHITECTURES

if TYPE_CHECKING:
    from torch import nn

    from ..config import ModelConfig
    from ..data import DataSpec


def build_model(cfg: ModelConfig, spec: DataSpec, num_outputs: int) -> nn.Module:
    entry = ARCHITECTURES[cfg.arch]
    params = {name: getattr(cfg, name) for name in entry.params}
    return entry.load()(input_shape=spec.sample_shape, num_outputs=num_outputs, **params)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
