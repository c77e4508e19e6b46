"""Model, head, optimizer and precision together: one training step, and evaluation.

`fit`, `eval`, overfit-tiny and lr-find all train and score through this one class.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import Config
from .data import DataSpec
from .data.dataset import batches
from .errors import UserError
from .heads import Head, build_head
from .metrics import Accumulator
from .models import build_model
from .optim import build_optimizer

EVAL_BATCH_SIZE = 1024  # samples per forward pass when scoring; no gradients are kept


def autocast_for(precision: str, device: torch.device):
    """Mixed precision as a context factory; fp32 runs plain."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA GPU (device here: {device}); "
                        "use bf16 on the CPU, or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


class Learner:
    def __init__(self, model: nn.Module, head: Head, optimizer: torch.optim.Optimizer,
                 precision: str, device: torch.device):
        self.model, self.head, self.optimizer, self.device = model, head, optimizer, device
        self.autocast = autocast_for(precision, device)
        # Loss scaling only matters for fp16; disabled it passes losses and steps through.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    @classmethod
    def build(cls, cfg: Config, spec: DataSpec, device: torch.device) -> Learner:
        head = build_head(cfg.model.head, spec)
        model = build_model(cfg.model, spec, head.num_outputs).to(device)
        return cls(model, head, build_optimizer(cfg.optimizer, model), cfg.train.precision, device)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor | None:
        return self.head.predict(logits) if self.head.classifies else None

    def loss_and_logits(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            logits = self.model(x)
        return self.head.loss(logits.float(), y), logits

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, optimizer step. Returns the (detached) loss and logits."""
        loss, logits = self.loss_and_logits(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor,
                 split: str) -> tuple[dict[str, float], torch.Tensor | None]:
        """Mean loss (and accuracy for classifiers) over a split in eval mode, and the
        predicted classes (None for regression)."""
        self.model.eval()
        totals = Accumulator(self.device, self.head.classifies)
        predicted = []
        for xb, yb in batches(x, y, EVAL_BATCH_SIZE):
            loss, logits = self.loss_and_logits(xb, yb)
            predictions = self.predictions(logits)
            totals.update(loss, predictions, yb)
            predicted.append(predictions)
        return totals.compute(split), torch.cat(predicted) if self.head.classifies else None
