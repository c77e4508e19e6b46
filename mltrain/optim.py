"""Optimizers and learning-rate schedules by name (torch's own classes), warmup included.

Schedules advance once per optimizer step (plateau: once per validation).
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn
from torch.optim import Optimizer, lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from .config import OptimizerConfig, SchedulerConfig
from .registry import OPTIMIZERS, SCHEDULERS


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only: never on biases or norm scales.
    One group when there is no decay (each group is a separate optimizer kernel launch)."""
    if weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The named torch optimizer; its fused kernel where torch offers one for the model's device
    (adam, adamw, sgd on CPU and CUDA: about 25 % less time per step for a small MLP on the CPU)."""
    entry = OPTIMIZERS[cfg.name]
    options = {name: getattr(cfg, name) for name in entry.params}
    optimizer_class = entry.load()
    device = next(model.parameters()).device
    if "fused" in inspect.signature(optimizer_class).parameters and device.type in ("cpu", "cuda"):
        options["fused"] = True
    return optimizer_class(parameter_groups(model, cfg.weight_decay), lr=cfg.lr, **options)


def constant(optimizer: Optimizer, total_steps: int, mode: str) -> LRScheduler:
    return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def step(optimizer: Optimizer, total_steps: int, mode: str, step_size: int, gamma: float) -> LRScheduler:
    return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def multistep(optimizer: Optimizer, total_steps: int, mode: str, milestones: tuple[int, ...],
              gamma: float) -> LRScheduler:
    return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def exponential(optimizer: Optimizer, total_steps: int, mode: str, decay: float) -> LRScheduler:
    return lr_scheduler.ExponentialLR(optimizer, gamma=decay)


def cosine(optimizer: Optimizer, total_steps: int, mode: str, min_lr: float) -> LRScheduler:
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=min_lr)


def onecycle(optimizer: Optimizer, total_steps: int, mode: str, pct_start: float) -> LRScheduler:
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # One more step than the run takes: torch raises if stepped past total_steps.
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps + 1, pct_start=pct_start,
                                   anneal_strategy="cos", cycle_momentum=False)


def plateau(optimizer: Optimizer, total_steps: int, mode: str, gamma: float, patience: int) -> LRScheduler:
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=gamma, patience=patience)


class LRSchedule:
    """Linear warmup for `warmup_steps`, then the named torch scheduler.

    `after_step` runs once per optimizer step; `after_validation` feeds the monitored metric
    to a plateau scheduler, the one kind that steps on validations instead of steps.
    """

    def __init__(self, cfg: SchedulerConfig, optimizer: Optimizer, total_steps: int, monitor_mode: str):
        self.optimizer = optimizer
        self.warmup_steps = cfg.warmup_steps
        self.steps = 0
        entry = SCHEDULERS[cfg.name]
        options = {name: getattr(cfg, name) for name in entry.params}
        self.main = entry.load()(optimizer, total_steps=max(1, total_steps - cfg.warmup_steps),
                                 mode=monitor_mode, **options)
        self.on_plateau = isinstance(self.main, lr_scheduler.ReduceLROnPlateau)
        # Built after the main scheduler so that its lr (base / warmup_steps) is the one in force.
        self.warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / cfg.warmup_steps, end_factor=1.0,
                                            total_iters=cfg.warmup_steps) if cfg.warmup_steps else None
        self._first_lrs = [group["lr"] for group in optimizer.param_groups]  # where a replay starts

    def after_step(self) -> None:
        self.steps += 1
        if self.steps <= self.warmup_steps:
            self.warmup.step()
        elif not self.on_plateau:
            self.main.step()

    def after_validation(self, value: float) -> None:
        if self.on_plateau and self.steps >= self.warmup_steps:
            self.main.step(value)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"steps": self.steps, "main": self.main.state_dict(),
                "warmup": self.warmup.state_dict() if self.warmup else None}

    def load_state_dict(self, state: dict) -> None:
        """Replay the steps taken, over the schedule this config builds: the same arithmetic as
        the run itself (so an exact resume gets the same lr to the bit), and a run extended with
        more epochs anneals over its new length. Plateau's counters and lr come from the state."""
        for group, lr in zip(self.optimizer.param_groups, self._first_lrs):
            group["lr"] = lr  # the schedulers' formulas continue from the group's current lr
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            for _ in range(state["steps"]):
                self.after_step()
        if self.on_plateau:
            self.main.load_state_dict(state["main"])
            for group, lr in zip(self.optimizer.param_groups, state["main"]["_last_lr"]):
                group["lr"] = lr
