"""Every metric rule in one place: loss averaging, accuracy, perplexity, per-class scores.

Sums stay on the device while a split is processed; `compute` is the one host sync.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def perplexity(mean_token_loss: float) -> float:
    """exp of the mean cross-entropy per token (nats): the effective number of equally likely
    next tokens. Reported wherever a classifier has a target per position."""
    return math.exp(mean_token_loss) if mean_token_loss < 700 else math.inf


class Accumulator:
    """Running sums over batches: target-weighted loss and, for classifiers, correct predictions.

    A target is one value of y: one per sample, or one per position (token) for per-position
    tasks, so loss and accuracy average over tokens there, as the loss itself does.
    """

    def __init__(self, device: torch.device, classifies: bool,
                 across: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`across`: sums a tensor over every process of a distributed job (the identity alone)."""
        self.classifies, self.across = classifies, across
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0  # samples, known on the host, no sync needed
        self.targets = 0  # values of y: samples x positions per sample
        self.per_position = False

    def update(self, loss: torch.Tensor, predictions: torch.Tensor | None, y: torch.Tensor) -> None:
        """Add one batch; `loss` is the mean over its targets."""
        self.loss_sum.add_(loss.detach(), alpha=y.numel())
        if predictions is not None:
            self.correct += (predictions == y).sum()
        self.count += len(y)
        self.targets += y.numel()
        self.per_position = y.dim() > 1

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count,
                "targets": self.targets, "per_position": self.per_position}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum.copy_(state["loss_sum"])
        self.correct.copy_(state["correct"])
        self.count, self.targets, self.per_position = state["count"], state["targets"], state["per_position"]

    def compute(self, split: str, across_processes: bool = True) -> dict[str, float]:
        """The metrics so far: one host sync (and, across processes, one all-reduce)."""
        sums = torch.stack([self.loss_sum, self.correct.double(),
                            torch.tensor(float(self.targets), dtype=torch.float64, device=self.loss_sum.device)])
        if across_processes and self.across is not None:
            sums = self.across(sums)
        loss_sum, correct, targets = sums.tolist()
        metrics = {f"{split}/loss": loss_sum / max(targets, 1)}
        if self.classifies:
            metrics[f"{split}/accuracy"] = correct / max(targets, 1)
            if self.per_position:
                metrics[f"{split}/perplexity"] = perplexity(metrics[f"{split}/loss"])
        return metrics


    def samples(self) -> int:
        """Samples counted over every process (an all-reduce under DDP)."""
        if self.across is None:
            return self.count
        return int(self.across(torch.tensor([self.count], device=self.loss_sum.device)).item())


def samples_per_s(samples: int, seconds: float) -> float:
    """Training throughput; 0 before any time has passed."""
    return samples / seconds if seconds > 0 else 0.0


def confusion_matrix(predictions: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true class, predicted class) counts, over every position for per-position targets."""
    flat = (y.long() * num_classes + predictions.long()).flatten()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall and F1 of each class (0 where undefined), and its support."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.long().tolist()}
