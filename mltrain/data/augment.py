"""Augmentations of whole training batches of images (B, C, H, W), on the training device.

Each draws its randomness per sample from the run's own augmentation generator (seeded from the
run's seed, on the batch's device, its state kept in checkpoints), and works on the batch at once:
no Python loop over samples.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Literal, Union

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
def crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each side by `padding`, then take an (H, W) window at a random offset per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device, generator=generator)
    rows = (top + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (left + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


@AUGMENTATIONS.register("flip", "mirror left-right, half of the images", FlipConfig)
def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror left-right a random half of the samples."""
    flipped = torch.rand(len(x), 1, 1, 1, device=x.device, generator=generator) < 0.5
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
def translate(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each sample by a whole number of pixels in [-pixels, pixels] along each axis."""
    shift = torch.randint(-pixels, pixels + 1, (len(x), 2), device=x.device, generator=generator).float()
    return _affine(x, torch.zeros(len(x), device=x.device), shift)


@AUGMENTATIONS.register("rotate", "rotate by up to `degrees` degrees either way", RotateConfig)
def rotate(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each sample by an angle drawn uniformly from [-degrees, degrees]."""
    angle = (torch.rand(len(x), device=x.device, generator=generator) * 2 - 1) * math.radians(degrees)
    return _affine(x, angle, torch.zeros(len(x), 2, device=x.device))


@AUGMENTATIONS.register("cutout", "zero a `size` x `size` square at a random place", CutoutConfig)
def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the borders) centred at a random pixel of each sample."""
    b, _, h, w = x.shape
    top = torch.randint(0, h, (b, 1), device=x.device, generator=generator) - size // 2
    left = torch.randint(0, w, (b, 1), device=x.device, generator=generator) - size // 2
    rows = torch.arange(h, device=x.device) - top  # (B, H): row offset inside the square
    cols = torch.arange(w, device=x.device) - left
    inside = ((rows >= 0) & (rows < size))[:, None, :, None] & ((cols >= 0) & (cols < size))[:, None, None, :]
    return x.masked_fill(inside, 0.0)


@AUGMENTATIONS.register("noise", "add Gaussian noise of std `std` to the (normalised) input", NoiseConfig)
def noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


AUGMENT_SEED_OFFSET = 7_919  # the augmentation generator's seed is the run's seed plus this


class Augment:
    """The configured augmentations, applied in order to each training batch, drawing from one
    generator the run owns (not torch's global one)."""

    def __init__(self, configs: tuple[AugmentSection, ...], seed: int, device: torch.device):
        """`device`: where the training batches will be (the generator must live there too)."""
        self.configs, self.seed = configs, seed
        self.generator = torch.Generator(device=device).manual_seed(seed + AUGMENT_SEED_OFFSET)
        self.steps = tuple(partial(AUGMENTATIONS[cfg.name].factory, **cfg.own_values()) for cfg in configs)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator=self.generator)
        return x

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

