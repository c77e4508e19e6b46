"""Output heads: how many outputs a model needs, the loss on its logits, and predictions.

The loss is always computed on logits (cross-entropy, BCE-with-logits, MSE); probabilities are
only for reporting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import DataSpec
from .registry import HEADS


class SoftmaxHead:
    """One logit per class; cross-entropy."""

    classifies = True

    def __init__(self, spec: DataSpec):
        self.num_outputs = spec.num_classes

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1)

    def initial_loss(self, y: torch.Tensor) -> float:
        """The loss a model with uniform outputs gets: ln(classes)."""
        return math.log(self.num_outputs)


class SigmoidHead:
    """Binary (one logit) or one-vs-rest (one logit per class); BCE-with-logits."""

    classifies = True

    def __init__(self, spec: DataSpec):
        self.num_outputs = 1 if spec.num_classes == 2 else spec.num_classes

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.num_outputs == 1:
            return y.float().unsqueeze(-1)
        return F.one_hot(y, self.num_outputs).float()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, self._targets(y))

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        if self.num_outputs == 1:
            return (logits.squeeze(-1) > 0).long()
        return logits.argmax(dim=-1)

    def initial_loss(self, y: torch.Tensor) -> float:
        return math.log(2.0)


class LinearHead:
    """Raw outputs for regression; mean squared error."""

    classifies = False

    def __init__(self, spec: DataSpec):
        self.num_outputs = math.prod(spec.target_shape) if spec.target_shape else 1
        self.target_shape = spec.target_shape

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.reshape(y.shape), y)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.reshape(len(logits), *self.target_shape)

    def initial_loss(self, y: torch.Tensor) -> float:
        """The loss of predicting zero everywhere: the mean square of the targets."""
        return float(y.float().pow(2).mean())


Head = SoftmaxHead | SigmoidHead | LinearHead


def build_head(name: str, spec: DataSpec) -> Head:
    return HEADS[name].load()(spec)
