"""Transformer encoder classifier over sequence steps, image rows or image patches."""

from __future__ import annotations

import math

import torch
from torch import nn

from typing import Literal

from ..errors import UserError
from ..registry import ARCHITECTURES, IMAGE, SEQUENCE
from ..schema import NonNegativeInt
from .layers import INIT_STD, AttentionConfig, Block, as_steps, steps_and_features


class TransformerConfig(AttentionConfig):
    patch_size: NonNegativeInt = 0
    """on images: side of the square patches, one step each; 0: rows as steps"""
    positions: Literal["learned", "sinusoidal"] = "learned"
    """how step positions are encoded"""
    pooling: Literal["cls", "mean"] = "cls"
    """a class token's output, or the mean over steps"""


class PatchEmbedding(nn.Module):
    """Non-overlapping square patches of a (C, H, W) image, each one step of d_model features;
    a remainder narrower than a patch at the right or bottom edge is dropped."""

    def __init__(self, input_shape: tuple[int, ...], d_model: int, patch_size: int):
        super().__init__()
        channels, height, width = input_shape
        if patch_size > min(height, width):
            raise UserError(f"model.patch_size: {patch_size} is larger than the {height}x{width} images "
                            f"of this dataset; use at most {min(height, width)}, or 0 to read image rows")
        self.steps = (height // patch_size) * (width // patch_size)
        self.conv = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(2).transpose(1, 2)  # (B, d_model, H', W') -> (B, H'W', d_model)


class StepEmbedding(nn.Module):
    """Each step of a sample, as `layers.steps_and_features` reads it, through one Linear."""

    def __init__(self, input_shape: tuple[int, ...], d_model: int):
        super().__init__()
        self.steps, features = steps_and_features(input_shape)
        self.linear = nn.Linear(features, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(as_steps(x))  # (B, T, d_model)


def sinusoidal_positions(steps: int, d_model: int) -> torch.Tensor:
    """(steps, d_model): sin on even features, cos on odd ones, wavelengths 2π to 10000·2π."""
    position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(steps, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, :d_model // 2]
    return table


@ARCHITECTURES.register("transformer", "pre-norm transformer encoder classifier over sequence steps, image rows "
                        "or image patches", TransformerConfig, tags={SEQUENCE, IMAGE})
class Transformer(nn.Module):
    """Embedding + positions -> dropout -> `layers` pre-norm blocks -> LayerNorm -> pooling -> Linear.

    Steps: (L,) and (L, F) samples give L steps; images give H rows of C*W features, or with
    patch_size > 0 one step per patch_size x patch_size patch. Pooling `cls` prepends a learned
    class token and reads its output; `mean` averages the outputs over the steps. Positions are
    `learned` vectors or the fixed `sinusoidal` table, added to the embedded steps.

    Initialisation (GPT-2 style): block and output Linears normal(0, 0.02) with zero biases,
    the two residual output projections of each block with std 0.02/sqrt(2 * layers) so the
    residual stream does not grow with depth; learned positions and the class token
    normal(0, 0.02); the step or patch embedding keeps PyTorch's default (Kaiming-uniform,
    a = sqrt(5)); LayerNorms weight 1, bias 0.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, d_model: int, heads: int, layers: int,
                 mlp_ratio: float, patch_size: int, positions: str, pooling: str, activation: str,
                 dropout: float):
        super().__init__()
        if len(input_shape) == 3 and patch_size > 0:
            self.embedding: nn.Module = PatchEmbedding(input_shape, d_model, patch_size)
        else:
            self.embedding = StepEmbedding(input_shape, d_model)
        steps = self.embedding.steps + (1 if pooling == "cls" else 0)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        if positions == "learned":
            self.positions = nn.Parameter(torch.zeros(1, steps, d_model))
        else:
            self.register_buffer("positions", sinusoidal_positions(steps, d_model).unsqueeze(0), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(d_model, heads, mlp_ratio, dropout, activation, causal=False)
                                      for _ in range(layers)))
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, num_outputs)
        self._initialise(layers)

    def _initialise(self, layers: int) -> None:
        for block in self.blocks:
            block.initialise(layers)
        nn.init.normal_(self.output.weight, std=INIT_STD)
        nn.init.zeros_(self.output.bias)
        for parameter in (self.class_token, self.positions):
            if isinstance(parameter, nn.Parameter):
                nn.init.normal_(parameter, std=INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.embedding(x)  # (B, T, d_model)
        if self.class_token is not None:
            steps = torch.cat([self.class_token.expand(steps.shape[0], -1, -1), steps], dim=1)
        hidden = self.final_norm(self.blocks(self.dropout(steps + self.positions)))
        pooled = hidden[:, 0] if self.class_token is not None else hidden.mean(dim=1)
        return self.output(pooled)
