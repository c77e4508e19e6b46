"""Optimizers and learning-rate schedules by name (torch's own classes), warmup included.

Schedules advance once per optimizer step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import lr_scheduler

from .config import OptimizerConfig, SchedulerConfig
from .registry import OPTIMIZERS, SCHEDULERS


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: never on biases or norm scales."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    entry = OPTIMIZERS[cfg.name]
    options = {name: getattr(cfg, name) for name in entry.params}
    return entry.load()(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, **options)


def constant(optimizer: torch.optim.Optimizer, total_steps: int) -> lr_scheduler.LRScheduler:
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def cosine(optimizer: torch.optim.Optimizer, total_steps: int, min_lr: float) -> lr_scheduler.LRScheduler:
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=min_lr)


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer,
                    total_steps: int) -> lr_scheduler.LRScheduler:
    """The named schedule over the steps after warmup, preceded by linear warmup if asked."""
    entry = SCHEDULERS[cfg.name]
    options = {name: getattr(cfg, name) for name in entry.params}
    main = entry.load()(optimizer, total_steps=max(1, total_steps - cfg.warmup_steps), **options)
    if cfg.warmup_steps == 0:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / cfg.warmup_steps, end_factor=1.0,
                                   total_iters=cfg.warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[cfg.warmup_steps])
