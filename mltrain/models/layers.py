"""Small building blocks shared by the model families."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import ValidationInfo, field_validator
from torch import nn

from ..registry import ACTIVATIONS, Component
from ..schema import Fraction, ModelSection, NoKeys, PositiveFloat, PositiveInt, name_in

NORM_GROUPS = 8  # groups of a group norm; fewer (the gcd with the width) when the width is not a multiple


ActivationName = Annotated[str, name_in("ACTIVATIONS")]
NormKind = Literal["none", "batch", "layer", "group"]

for _name, _help, _module in (
    ("relu", "max(0, x)", nn.ReLU),
    ("gelu", "Gaussian error linear unit", nn.GELU),
    ("tanh", "hyperbolic tangent", nn.Tanh),
    ("sigmoid", "logistic function", nn.Sigmoid),
    ("silu", "x * sigmoid(x), a.k.a. swish", nn.SiLU),
    ("leaky_relu", "max(0.01 x, x)", nn.LeakyReLU),
    ("elu", "exponential linear unit", nn.ELU),
):
    ACTIVATIONS.add(Component(_name, _help, _module, NoKeys))


def numbered(layers: list[nn.Module | None]) -> OrderedDict[str, nn.Module]:
    """The layers for a Sequential, each named by its place in `layers`. A None (a norm of kind
    none) is no layer, since a call that does nothing still costs a small model's step a module
    call, but it keeps its place: the other layers' names, and so their weights' names in a
    checkpoint, are the same with or without a norm (and as they were when it was an Identity)."""
    return OrderedDict((str(place), layer) for place, layer in enumerate(layers) if layer is not None)


class AttentionConfig(ModelSection):
    """The keys of the attention models (transformer, gpt)."""
    d_model: PositiveInt = 128
    """width of the token vectors (a multiple of heads)"""
    heads: PositiveInt = 4
    """attention heads per block"""
    layers: PositiveInt = 2
    """stacked blocks"""
    mlp_ratio: PositiveFloat = 4.0
    """width of each block's MLP, as a multiple of d_model"""
    dropout: Fraction = 0.0
    """on embeddings, attention and residual branches, while training"""
    activation: ActivationName = "gelu"
    """in each block's MLP; a name from `mltrain list activations`"""

    @field_validator("heads")
    @classmethod
    def _heads_divide_d_model(cls, heads: int, info: ValidationInfo) -> int:
        d_model = info.data.get("d_model")
        if d_model is not None and d_model % heads:
            raise ValueError(f"{heads} heads do not divide model.d_model {d_model}; "
                             "each head takes an equal share of d_model")
        return heads


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name].factory()


def norm(kind: str, width: int, spatial_dims: int = 0) -> nn.Module | None:
    """Normalisation of (B, width, *spatial) activations with 0, 1 or 2 spatial dimensions.

    layer: over all features of a sample (LayerNorm on vectors, one group over channels and
    positions on feature maps); group: over groups of channels and positions; batch: per channel
    over the batch; none: no layer (None).
    """
    if kind == "none":
        return None
    if kind == "batch":
        return (nn.BatchNorm1d if spatial_dims < 2 else nn.BatchNorm2d)(width)
    if kind == "layer":
        return nn.LayerNorm(width) if spatial_dims == 0 else nn.GroupNorm(1, width)
    return nn.GroupNorm(math.gcd(width, NORM_GROUPS), width)


def steps_and_features(sample_shape: tuple[int, ...]) -> tuple[int, int]:
    """How sequence models read a sample: (L,) is L steps of 1 feature, (L, F) is L steps of F,
    an image (C, H, W) is H steps (rows) of C*W features."""
    if len(sample_shape) == 1:
        return sample_shape[0], 1
    if len(sample_shape) == 2:
        return sample_shape[0], sample_shape[1]
    channels, height, width = sample_shape
    return height, channels * width


def as_steps(x: torch.Tensor) -> torch.Tensor:
    """A batch of samples as (B, T, F) sequences, read as `steps_and_features` says."""
    if x.ndim == 2:
        return x.unsqueeze(-1)  # (B, L, 1)
    if x.ndim == 3:
        return x
    return x.transpose(1, 2).flatten(2)  # (B, C, H, W) -> (B, H, C*W)


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, T, d_model): one qkv Linear, heads split,
    scaled_dot_product_attention (causal: each step sees only itself and earlier steps), an
    output projection into the residual stream, dropout."""

    def __init__(self, d_model: int, heads: int, dropout: float, causal: bool):
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        # (B, T, 3C) -> three (B, heads, T, C / heads)
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(attended.transpose(1, 2).reshape(batch, steps, width)))


INIT_STD = 0.02  # GPT-2's std for the normal initialisation of transformer weights


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float, activation_name: str,
                 causal: bool):
        super().__init__()
        mlp_width = round(mlp_ratio * d_model)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = SelfAttention(d_model, heads, dropout, causal)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_width), activation(activation_name),
            nn.Linear(mlp_width, d_model), nn.Dropout(dropout),
        )

    def initialise(self, layers: int) -> None:
        """GPT-2 style: every Linear N(0, INIT_STD) with zero bias; the two projections that write
        into the residual stream scaled down by 1/sqrt(2 layers), so its variance stays about
        constant with depth."""
        for linear in (self.attention.qkv, self.attention.proj, self.mlp[0], self.mlp[2]):
            nn.init.normal_(linear.weight, std=INIT_STD)
            nn.init.zeros_(linear.bias)
        for projection in (self.attention.proj, self.mlp[2]):
            nn.init.normal_(projection.weight, std=INIT_STD / math.sqrt(2 * layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))
