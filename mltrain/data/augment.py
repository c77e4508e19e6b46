"""Augmentations of whole training batches of images (B, C, H, W), on the training device.

Each draws its randomness per sample from torch's generator of the batch's device (seeded by the
run, captured in checkpoints), and works on the batch at once: no Python loop over samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Callable, Literal, Union

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import AUGMENTATIONS
from ..schema import AugmentSection, PositiveFloat, PositiveInt


class CropConfig(AugmentSection):
    name: Literal["crop"]
    padding: PositiveInt = 4
    """pixels of zero padding on each side before cropping back to size"""


class FlipConfig(AugmentSection):
    name: Literal["flip"]


class TranslateConfig(AugmentSection):
    name: Literal["translate"]
    pixels: PositiveInt = 2
    """largest shift along each axis, in pixels"""


class RotateConfig(AugmentSection):
    name: Literal["rotate"]
    degrees: Annotated[float, Field(gt=0.0, le=180.0)] = 10.0
    """largest rotation either way, in degrees"""


class CutoutConfig(AugmentSection):
    name: Literal["cutout"]
    size: PositiveInt = 8
    """side of the zeroed square, in pixels"""


class NoiseConfig(AugmentSection):
    name: Literal["noise"]
    std: PositiveFloat = 0.05
    """std of the Gaussian noise, in units of the normalised input"""


# What `data.augment` holds: a list of these, each picked by its `name`.
AugmentList = tuple[Annotated[Union[CropConfig, FlipConfig, TranslateConfig, RotateConfig, CutoutConfig, NoiseConfig],
                              Field(discriminator="name")], ...]


@AUGMENTATIONS.register("crop", "pad by `padding` pixels, then crop back to size at a random place", CropConfig)
def crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each side by `padding`, then take an (H, W) window at a random offset per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (top + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@AUGMENTATIONS.register("flip", "mirror left-right, half of the images", FlipConfig)
def flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror left-right a random half of the samples."""
    flipped = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    return torch.where(flipped, x.flip(-1), x)


def _affine(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each sample by `angle` (B,) radians about its centre and shift it by `shift` (B, 2)
    pixels (x, y); zeros come in from outside."""
    b, _, h, w = x.shape
    cos, sin = angle.cos(), angle.sin()
    # affine_grid works in [-1, 1] coordinates; the aspect terms keep the rotation rigid in pixels.
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, -2 * shift[:, 0] / w], dim=1),
        torch.stack([sin * w / h, cos, -2 * shift[:, 1] / h], dim=1),
    ], dim=1)  # (B, 2, 3): output coordinates -> input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@AUGMENTATIONS.register("translate", "shift by up to `pixels` whole pixels along each axis", TranslateConfig)
def translate(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Shift each sample by a whole number of pixels in [-pixels, pixels] along each axis."""
    shift = torch.randint(-pixels, pixels + 1, (len(x), 2), device=x.device).float()
    return _affine(x, torch.zeros(len(x), device=x.device), shift)


@AUGMENTATIONS.register("rotate", "rotate by up to `degrees` degrees either way", RotateConfig)
def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each sample by an angle drawn uniformly from [-degrees, degrees]."""
    angle = (torch.rand(len(x), device=x.device) * 2 - 1) * math.radians(degrees)
    return _affine(x, angle, torch.zeros(len(x), 2, device=x.device))


@AUGMENTATIONS.register("cutout", "zero a `size` x `size` square at a random place", CutoutConfig)
def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square (clipped at the borders) centred at a random pixel of each sample."""
    b, _, h, w = x.shape
    top = torch.randint(0, h, (b, 1), device=x.device) - size // 2
    left = torch.randint(0, w, (b, 1), device=x.device) - size // 2
    rows = torch.arange(h, device=x.device) - top  # (B, H): row offset inside the square
    cols = torch.arange(w, device=x.device) - left
    inside = ((rows >= 0) & (rows < size))[:, None, :, None] & ((cols >= 0) & (cols < size))[:, None, None, :]
    return x.masked_fill(inside, 0.0)


@AUGMENTATIONS.register("noise", "add Gaussian noise of std `std` to the (normalised) input", NoiseConfig)
def noise(x: torch.Tensor, std: float) -> torch.Tensor:
    return x + std * torch.randn_like(x)


@dataclass(frozen=True)
class Augment:
    """The configured augmentations, applied in order to each training batch."""

    steps: tuple[Callable[[torch.Tensor], torch.Tensor], ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


def build_augment(configs: tuple[AugmentSection, ...]) -> Augment:
    return Augment(tuple(partial(AUGMENTATIONS[cfg.name].factory, **cfg.own_values()) for cfg in configs))
