"""ResNet-18 and ResNet-34 from torchvision, untrained, adapted to the data's images.

torchvision is imported only when one is built: it adds about 1.8 s to start-up, paid only by these archs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from ..registry import ARCHITECTURES, IMAGE
from ..schema import ModelSection
from .layers import ActivationName
from .layers import activation as make_activation

if TYPE_CHECKING:
    from torchvision.models import ResNet

SMALL_INPUT_MAX_SIDE = 32  # px: images up to this side get the small stem when small_input is null
STEM_WIDTH = 64  # channels out of torchvision's stem, which layer1 expects


class ResNetConfig(ModelSection):
    small_input: bool | None = None
    """3x3 stride-1 stem, no max-pool; null: for images of side <= 32"""
    activation: ActivationName = "relu"
    """replaces every ReLU; a name from `mltrain list activations`"""


@ARCHITECTURES.register("resnet18", "torchvision's ResNet-18, untrained; small_input: CIFAR-style stem for "
                        "small images", ResNetConfig, tags={IMAGE})
def resnet18(input_shape: tuple[int, ...], num_outputs: int, small_input: bool | None,
             activation: str) -> ResNet:
    """torchvision.models.resnet18(weights=None, num_classes=num_outputs), then `adapt`ed."""
    from torchvision.models import resnet18 as torchvision_resnet18

    return adapt(torchvision_resnet18(weights=None, num_classes=num_outputs), input_shape, small_input, activation)


@ARCHITECTURES.register("resnet34", "torchvision's ResNet-34, untrained; small_input: CIFAR-style stem for "
                        "small images", ResNetConfig, tags={IMAGE})
def resnet34(input_shape: tuple[int, ...], num_outputs: int, small_input: bool | None,
             activation: str) -> ResNet:
    """torchvision.models.resnet34(weights=None, num_classes=num_outputs), then `adapt`ed."""
    from torchvision.models import resnet34 as torchvision_resnet34

    return adapt(torchvision_resnet34(weights=None, num_classes=num_outputs), input_shape, small_input, activation)


def adapt(net: ResNet, input_shape: tuple[int, ...], small_input: bool | None, activation: str) -> ResNet:
    """Fit a torchvision ResNet to (C, H, W) images and the configured activation.

    The stem conv takes C channels. With small_input (null: when both sides are at most
    SMALL_INPUT_MAX_SIDE) the 7x7 stride-2 stem conv and its max-pool, which shrink the image 4x
    before layer1, become one 3x3 stride-1 conv (the CIFAR variant), so 32x32 and smaller
    images keep enough resolution through the four stages. Every ReLU becomes `activation`.

    Initialisation: torchvision's: Kaiming-normal conv weights (fan_out, ReLU gain), the
    replaced stem conv included; batch norms at weight 1, bias 0; nn.Linear's default for fc.
    """
    channels, height, width = input_shape
    if small_input is None:
        small_input = max(height, width) <= SMALL_INPUT_MAX_SIDE
    if small_input:
        net.conv1 = nn.Conv2d(channels, STEM_WIDTH, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(channels, STEM_WIDTH, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    for module in list(net.modules()):
        if isinstance(getattr(module, "relu", None), nn.ReLU):
            module.relu = make_activation(activation)
    return net
