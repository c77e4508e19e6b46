"""Every metric rule in one place: loss averaging, accuracy, per-class scores.

Sums stay on the device while a split is processed; `compute` is the one host sync.
"""

from __future__ import annotations

import torch


class Accumulator:
    """Running sums over batches: sample-weighted loss and, for classifiers, correct predictions."""

    def __init__(self, device: torch.device, classifies: bool):
        self.classifies = classifies
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0  # known on the host, no sync needed

    def update(self, loss: torch.Tensor, predictions: torch.Tensor | None, y: torch.Tensor) -> None:
        """Add one batch; `loss` is the batch mean."""
        self.loss_sum += loss.detach().double() * len(y)
        if predictions is not None:
            self.correct += (predictions == y).sum()
        self.count += len(y)

    def compute(self, split: str) -> dict[str, float]:
        loss_sum, correct = torch.stack([self.loss_sum, self.correct.double()]).tolist()
        metrics = {f"{split}/loss": loss_sum / max(self.count, 1)}
        if self.classifies:
            metrics[f"{split}/accuracy"] = correct / max(self.count, 1)
        return metrics


def confusion_matrix(predictions: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true class, predicted class) counts."""
    flat = y.long() * num_classes + predictions.long()
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
