"""The monitored metric: which epoch is best, and when to stop early."""

from __future__ import annotations

import math


def mode_of(metric: str) -> str:
    """'max' for scores (accuracy), 'min' for losses."""
    return "max" if metric.endswith("accuracy") else "min"


class Monitor:
    def __init__(self, metric: str, patience: int | None = None, min_delta: float = 0.0):
        self.metric = metric
        self.mode = mode_of(metric)
        self.patience = patience
        self.min_delta = min_delta
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.epochs_without_improvement = 0

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record an epoch's metrics; True if it is the new best."""
        value = metrics[self.metric]
        change = (self.best_value - value) if self.mode == "min" else (value - self.best_value)
        if change > self.min_delta or self.best_epoch == 0:
            self.best_value, self.best_epoch = value, epoch
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    def stop_reason(self) -> str | None:
        if self.patience is not None and self.epochs_without_improvement >= self.patience:
            return (f"early stopping: {self.metric} has not improved by more than {self.min_delta} "
                    f"for {self.patience} epochs (best {self.best_value:.4g} at epoch {self.best_epoch})")
        return None

    def best(self) -> dict:
        return {"metric": self.metric, "value": self.best_value, "epoch": self.best_epoch}
