"""Convolutional network for 1-D signals and images."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ..errors import UserError
from ..registry import ARCHITECTURES, IMAGE, SEQUENCE
from ..schema import Fraction, ModelSection, NonNegativeInt, PositiveInt
from .layers import ActivationName, NormKind
from .layers import activation as make_activation
from .layers import norm as make_norm
from .layers import numbered

POOLS = {"max": (nn.MaxPool1d, nn.MaxPool2d), "avg": (nn.AvgPool1d, nn.AvgPool2d)}
MAX_FLATTENED = 1 << 22  # features a flatten readout may hand on (the first dense layer's fan-in)
Pool = Literal["max", "avg", "none"]


class CNNConfig(ModelSection):
    channels: tuple[PositiveInt, ...] = (32, 64)
    """output channels of each conv block"""
    kernel_size: PositiveInt = 3
    """side of each conv kernel, in steps or pixels"""
    stride: PositiveInt = 1
    """step of each conv, in steps or pixels"""
    padding: NonNegativeInt | None = None
    """zeros added on each side; null: kernel_size // 2 (size kept at stride 1)"""
    pool: Pool | tuple[Pool, ...] = "max"
    """2x down-sampling after each conv block (sides of 1 kept); or one per block, e.g. [none, max]"""
    norm: NormKind = "none"
    """after each conv"""
    activation: ActivationName = "relu"
    """a name from `mltrain list activations`"""
    dropout: Fraction = 0.0
    """probability of zeroing an activation while training (after each block and each dense layer)"""
    readout: Literal["avg", "flatten"] = "flatten"
    """flatten: every position's features, which keeps where things are (measured better, see the models guide); avg: the mean over positions"""
    dense: tuple[PositiveInt, ...] = ()
    """widths of hidden layers between the readout and the output (with the activation and dropout)"""


@ARCHITECTURES.register("cnn", "convolutional network: Conv1d on (L,) or (C, L) signals, Conv2d on (C, H, W) "
                        "images; readout avg (any size) or flatten, optional dense layers", CNNConfig,
                        tags={IMAGE, SEQUENCE})
class CNN(nn.Module):
    """[Conv -> norm -> activation -> pool -> dropout] per entry of `channels`, the readout (the
    mean over positions, or every position flattened), [Linear -> activation -> dropout] per
    entry of `dense`, then the output Linear.

    Conv1d reads (C, L) samples, and (L,) samples as one channel; Conv2d reads (C, H, W).
    Padding defaults to kernel_size // 2, which keeps the size at stride 1. Each pool halves
    every side longer than 1 and leaves sides of 1 alone.

    Initialisation: PyTorch's default for nn.Conv and nn.Linear (Kaiming-uniform weights with
    a = sqrt(5), biases uniform in +-1/sqrt(fan_in)); norms start as the identity.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, channels: tuple[int, ...],
                 kernel_size: int, stride: int, padding: int | None, pool: str | tuple[str, ...], norm: str,
                 activation: str, dropout: float, readout: str = "avg", dense: tuple[int, ...] = ()):
        super().__init__()
        pools = (pool,) * len(channels) if isinstance(pool, str) else pool
        if len(pools) != len(channels):
            raise UserError(f"model.pool: {len(pools)} entries for {len(channels)} conv blocks (model.channels); "
                            "give one per block, or one name for all")
        self.one_channel = len(input_shape) == 1
        in_channels, *sides = (1, *input_shape) if self.one_channel else input_shape
        dims = len(sides)
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        padding = kernel_size // 2 if padding is None else padding
        layers: list[nn.Module | None] = []
        for block, (out_channels, pool) in enumerate(zip(channels, pools), start=1):
            if min(sides) + 2 * padding < kernel_size:
                raise UserError(f"model.kernel_size: conv block {block} of the cnn gets inputs of size "
                                f"{'x'.join(map(str, sides))}, smaller than kernel_size {kernel_size} with "
                                f"padding {padding}; use fewer channels entries, a smaller kernel_size or more padding")
            layers += [conv(in_channels, out_channels, kernel_size, stride, padding),
                       make_norm(norm, out_channels, dims), make_activation(activation)]
            sides = [(side + 2 * padding - kernel_size) // stride + 1 for side in sides]
            window = tuple(2 if side > 1 else 1 for side in sides)
            if pool != "none" and max(window) > 1:
                layers.append(POOLS[pool][dims - 1](window))
                sides = [side // size for side, size in zip(sides, window)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_channels = out_channels
        self.features = nn.Sequential(numbered(layers))
        self.flatten = readout == "flatten"
        width = in_channels * (math.prod(sides) if self.flatten else 1)
        if width > MAX_FLATTENED:
            raise UserError(f"model.readout flatten: samples of {tuple(input_shape)} leave {in_channels} channels of "
                            f"{'x'.join(map(str, sides))} positions, {width:,} features for one layer; pool more "
                            "(model.pool), use fewer or smaller samples, or readout: avg")
        hidden: list[nn.Module] = []
        for size in dense:
            hidden += [nn.Linear(width, size), make_activation(activation)] + ([nn.Dropout(dropout)] if dropout else [])
            width = size
        self.dense = nn.Sequential(*hidden)
        self.output = nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.one_channel:
            x = x.unsqueeze(1)  # (B, L) -> (B, 1, L)
        features = self.features(x)  # (B, C, *sides)
        read = features.flatten(1) if self.flatten else features.flatten(2).mean(dim=-1)
        return self.output(self.dense(read) if len(self.dense) else read)  # no call to an empty Sequential
