"""The monitored metric: which validation is best, and when to stop early."""

from __future__ import annotations

import math


def mode_of(metric: str, setting: str = "auto") -> str:
    """'max' for scores (accuracy), 'min' for losses, unless the config says otherwise."""
    if setting != "auto":
        return setting
    return "max" if metric.endswith("accuracy") else "min"


class Monitor:
    def __init__(self, metric: str, mode: str = "auto", patience: int | None = None, min_delta: float = 0.0):
        self.metric = metric
        self.mode = mode_of(metric, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_step = 0
        self.validations_without_improvement = 0

    def update(self, metrics: dict[str, float], epoch: int, step: int) -> bool:
        """Record one validation's metrics; True if it is the new best."""
        value = metrics[self.metric]
        change = (self.best_value - value) if self.mode == "min" else (value - self.best_value)
        if change > self.min_delta or self.best_step == 0:
            self.best_value, self.best_epoch, self.best_step = value, epoch, step
            self.validations_without_improvement = 0
            return True
        self.validations_without_improvement += 1
        return False

    def stop_reason(self) -> str | None:
        if self.patience is not None and self.validations_without_improvement >= self.patience:
            return (f"early stopping: {self.metric} has not improved by more than {self.min_delta} "
                    f"for {self.patience} validations (best {self.best_value:.4g} at epoch {self.best_epoch})")
        return None

    def state_dict(self) -> dict:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "best_step": self.best_step,
                "validations_without_improvement": self.validations_without_improvement}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def best(self) -> dict:
        return {"metric": self.metric, "value": self.best_value, "epoch": self.best_epoch, "step": self.best_step}
