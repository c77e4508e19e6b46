"""Small building blocks shared by the model families."""

from __future__ import annotations

from torch import nn

from ..registry import ACTIVATIONS


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name].load()()


def norm_1d(kind: str, width: int) -> nn.Module:
    """Normalisation over the features of (B, width) activations."""
    return {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](width)
