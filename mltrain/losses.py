"""The losses `model.head` names, each with how many outputs a model needs and how its logits
turn into predictions.

The loss is always computed on logits (cross-entropy, BCE-with-logits, MSE); probabilities are
only for reporting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import DataSpec
from .errors import UserError
from .registry import CLASSIFICATION, HEADS, REGRESSION
from .schema import NoKeys


@HEADS.register("softmax", "multi-class: one logit per class, cross-entropy on logits", NoKeys, tags={CLASSIFICATION})
class SoftmaxCrossEntropy:
    """One logit per class (at each target position); cross-entropy over every target."""

    classifies = True
    initial_loss_is = "ln(classes)"  # what initial_loss() computes, in words

    def __init__(self, spec: DataSpec, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing
        self.classes = spec.num_classes
        self.target_shape = spec.target_shape  # () for one label, (T,) for a label per position
        self.num_outputs = math.prod(spec.target_shape) * spec.num_classes  # per sample

    def _per_class(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, *target_shape, classes), from (B, outputs) or a model's own (B, T, classes)."""
        return logits.reshape(len(logits), *self.target_shape, self.classes)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.target_shape and logits.shape[1:] == (self.classes,):  # as it is: no reshaping a step
            return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return F.cross_entropy(self._per_class(logits).flatten(0, -2), y.flatten(),
                               label_smoothing=self.label_smoothing)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return self._per_class(logits).argmax(dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, *target_shape, classes), summing to 1 over the classes."""
        return self._per_class(logits).softmax(dim=-1)

    def initial_loss(self, y: torch.Tensor) -> float:
        """The loss a model with uniform outputs gets: ln(classes)."""
        return math.log(self.classes)

    def prior_logits(self, y: torch.Tensor) -> torch.Tensor:
        """(outputs,): the log class frequencies of `y` (add-one smoothed), at every position: the
        best constant output, the one a model that ignores its input can learn."""
        counts = torch.bincount(y.flatten(), minlength=self.classes).double() + 1
        return (counts / counts.sum()).log().float().repeat(math.prod(self.target_shape))


@HEADS.register("sigmoid", "binary or one-vs-rest: BCE-with-logits", NoKeys, tags={CLASSIFICATION})
class SigmoidCrossEntropy:
    """Binary (one logit) or one-vs-rest (one logit per class); BCE-with-logits. With a target per
    position only binary: one logit per position."""

    classifies = True
    initial_loss_is = "ln 2 per output"  # what initial_loss() computes, in words

    def __init__(self, spec: DataSpec):
        self.per_target = 1 if spec.num_classes == 2 else spec.num_classes  # logits per target
        if spec.target_shape and self.per_target > 1:
            raise UserError(f"model.head sigmoid: this dataset has a target per position with "
                            f"{spec.num_classes} classes each; the sigmoid head takes 2 classes per position. "
                            "Use model.head: softmax")
        self.target_shape = spec.target_shape
        self.num_outputs = math.prod(spec.target_shape) * self.per_target  # per sample

    def _per_target(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.reshape(len(logits), *self.target_shape, self.per_target)

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        if self.per_target == 1:
            return y.float().unsqueeze(-1)
        return F.one_hot(y, self.per_target).float()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self._per_target(logits), self._targets(y))

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        logits = self._per_target(logits)
        if self.per_target == 1:
            return (logits.squeeze(-1) > 0).long()
        return logits.argmax(dim=-1)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, *target_shape, classes): binary, (1 - p, p) of the one logit; one-vs-rest, each
        class's own sigmoid (they need not sum to 1)."""
        probabilities = self._per_target(logits).sigmoid()
        return torch.cat([1 - probabilities, probabilities], dim=-1) if self.per_target == 1 else probabilities

    def initial_loss(self, y: torch.Tensor) -> float:
        return math.log(2.0)

    def prior_logits(self, y: torch.Tensor) -> torch.Tensor:
        """(outputs,): the log-odds of each target's frequency in `y` (add-one smoothed)."""
        targets = self._targets(y).flatten(0, -2).double()  # (targets, per_target) of 0/1
        positives = targets.sum(dim=0)
        return ((positives + 1) / (len(targets) - positives + 1)).log().float().repeat(math.prod(self.target_shape))


@HEADS.register("linear", "regression: raw outputs, mean squared error", NoKeys, tags={REGRESSION})
class MeanSquaredError:
    """Raw outputs for regression; mean squared error.

    With a target scale (the training targets' mean and std per output, from the data state) the
    model learns standardised targets: the loss compares its outputs with (y - mean) / std, and
    `predict` gives outputs * std + mean, in the target's own units.
    """

    classifies = False
    initial_loss_is = "the mean square of the targets"  # what initial_loss() computes, in words

    def __init__(self, spec: DataSpec, target_scale: dict[str, list[float]] | None = None):
        self.num_outputs = math.prod(spec.target_shape)  # 1 for a scalar target
        self.target_shape = spec.target_shape
        self.target_scale = target_scale
        self._scales: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # (mean, std) per device

    def _scale(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) shaped like one sample's targets on `like`'s device, made once per device
        (a copy to the GPU at every step would wait for it)."""
        if like.device not in self._scales:
            self._scales[like.device] = tuple(
                torch.tensor(self.target_scale[key], dtype=torch.float32, device=like.device).reshape(self.target_shape)
                for key in ("mean", "std"))
        return self._scales[like.device]

    def standardised(self, y: torch.Tensor) -> torch.Tensor:
        """Targets in the units the model learns: (y - mean) / std, or y without a target scale."""
        if self.target_scale is None:
            return y
        mean, std = self._scale(y)
        return (y - mean) / std

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.reshape(y.shape), self.standardised(y))

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, *target_shape) in the target's units."""
        outputs = logits.reshape(logits.shape[0], *self.target_shape)
        if self.target_scale is None:
            return outputs
        mean, std = self._scale(outputs)
        return outputs * std + mean

    def initial_loss(self, y: torch.Tensor) -> float:
        """The loss of predicting zero everywhere: the mean square of the (standardised) targets."""
        return float(self.standardised(y.float()).pow(2).mean())

    def prior_logits(self, y: torch.Tensor) -> torch.Tensor:
        """(outputs,): the mean of each target over `y`, the best constant prediction for MSE."""
        return y.float().reshape(len(y), -1).mean(dim=0)


Loss = SoftmaxCrossEntropy | SigmoidCrossEntropy | MeanSquaredError


def build_loss(name: str, spec: DataSpec, label_smoothing: float = 0.0,
               target_scale: dict[str, list[float]] | None = None) -> Loss:
    """Label smoothing is a softmax-head option (config validation keeps it off the others); a
    target scale (the data state's `target_scale`) a regression head's."""
    options = {"label_smoothing": label_smoothing} if label_smoothing else {}
    if target_scale is not None and REGRESSION in HEADS[name].tags:
        options["target_scale"] = target_scale
    return HEADS[name].factory(spec, **options)

