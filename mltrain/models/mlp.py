"""Multi-layer perceptron."""

from __future__ import annotations

import math

from torch import nn

from ..registry import ARCHITECTURES, IMAGE, SEQUENCE, VECTOR
from ..schema import Fraction, ModelSection, PositiveInt
from .layers import ActivationName, NormKind
from .layers import activation as make_activation
from .layers import norm as make_norm
from .layers import numbered


class MLPConfig(ModelSection):
    hidden: tuple[PositiveInt, ...] = (128,)
    """width of each hidden layer"""
    activation: ActivationName = "relu"
    """a name from `mltrain list activations`"""
    norm: NormKind = "none"
    """after each hidden layer"""
    dropout: Fraction = 0.0
    """probability of zeroing a hidden unit while training"""


@ARCHITECTURES.register("mlp", "multi-layer perceptron; flattens any sample", MLPConfig,
                        tags={IMAGE, VECTOR, SEQUENCE})

class MLP(nn.Sequential):
    """Flatten -> [Linear -> norm -> activation -> dropout] per hidden width -> Linear.

    Initialisation: PyTorch's default for nn.Linear (Kaiming-uniform weights with a = sqrt(5),
    biases uniform in +-1/sqrt(fan_in)), which keeps the initial logits small so the loss at
    step 0 is close to ln(classes) for a softmax head.
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, hidden: tuple[int, ...],
                 activation: str, norm: str, dropout: float):
        layers: list[nn.Module | None] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), make_norm(norm, size), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        super().__init__(numbered(layers))
