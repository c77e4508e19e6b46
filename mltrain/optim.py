"""Optimizers and learning-rate schedules by name (torch's own classes), warmup included.

Schedules advance once per optimizer step (plateau: once per validation).
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from typing import Annotated, Callable, Collection

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.optim import Optimizer, lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from .data.dataset import steps_per_epoch
from .errors import UserError
from .parameter_sets import example_names, selects
from .registry import OPTIMIZERS, SCHEDULERS, Component, schema_from_signature
from .schema import (
    Fraction, NonNegativeFloat, NonNegativeInt, OptimizerSection, PositiveFloat, PositiveInt, SchedulerSection,
)

Decay = Annotated[float, Field(gt=0.0, lt=1.0)]  # a multiplier above 0 and below 1


class SGDConfig(OptimizerSection):
    momentum: Fraction = 0.9
    """fraction of the previous update added to this one"""
    nesterov: bool = False
    """Nesterov momentum"""


class AdamConfig(OptimizerSection):
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """decay rates of the first and second moment estimates"""
    eps: PositiveFloat = 1e-8
    """added to the denominator for stability"""


class RMSpropConfig(OptimizerSection):
    momentum: Fraction = 0.9
    """fraction of the previous update added to this one"""
    eps: PositiveFloat = 1e-8
    """added to the denominator for stability"""


for _name, _help, _class, _schema in (
    ("sgd", "stochastic gradient descent with momentum", torch.optim.SGD, SGDConfig),
    ("adam", "Adam", torch.optim.Adam, AdamConfig),
    ("adamw", "Adam with decoupled weight decay", torch.optim.AdamW, AdamConfig),
    ("rmsprop", "RMSprop", torch.optim.RMSprop, RMSpropConfig),
):
    OPTIMIZERS.add(Component(_name, _help, _class, _schema))


def _adopt_optimizer(name: str, factory: Callable, origin: str) -> Component:
    """Any torch-style optimizer class: `factory(param_groups, lr=..., **keys)`."""
    return Component(name, f"your optimizer ({origin})", factory,
                     schema_from_signature(factory, OptimizerSection, ("params",), name), origin=origin)


def _adopt_scheduler(name: str, factory: Callable, origin: str) -> Component:
    """Any torch-style scheduler class: `factory(optimizer, **keys)`, stepped once per optimizer step
    (ReduceLROnPlateau: once per validation, with train.monitor)."""
    def build(optimizer: Optimizer, total_steps: int, mode: str, **keys) -> LRScheduler:
        try:
            scheduler = factory(optimizer, **keys)
        except Exception as error:
            raise UserError(f"scheduler.name '{name}' failed to build: {type(error).__name__}: {error}") from None
        if not callable(getattr(scheduler, "step", None)):
            raise UserError(f"scheduler.name '{name}' returned {type(scheduler).__name__}, which has no step(); "
                            "name a torch-style scheduler class (its first argument the optimizer)")
        return scheduler
    return Component(name, f"your scheduler ({origin})", build,
                     schema_from_signature(factory, SchedulerSection, ("optimizer", "last_epoch", "verbose"), name),
                     origin=origin)


OPTIMIZERS.accept_user_components(_adopt_optimizer)
SCHEDULERS.accept_user_components(_adopt_scheduler)


def parameter_groups(model: nn.Module, cfg: OptimizerSection, backbone: Collection[str] = ()) -> list[dict]:
    """The optimizer's parameter groups: each parameter in the first of `optimizer.groups` that
    selects it (its lr scaled, its own weight decay), the rest in the base group, first, whose lr
    is `optimizer.lr`. Where a group sets no weight decay, `optimizer.weight_decay` applies to
    weight matrices and kernels only, never to biases or norm scales (a group each, as each group
    is its own kernel launch). Every trainable kind of parameter is in a group, frozen ones too:
    freezing is `requires_grad`, so unfreezing later never changes the optimizer's shape (or a
    checkpoint's). Each group carries its `name`: "" for the base group, else its `params`."""
    named = [(name, p) for name, p in model.named_parameters() if p.is_floating_point() or p.is_complex()]
    members: dict[int | None, list[nn.Parameter]] = {}
    for name, parameter in named:
        index = next((i for i, group in enumerate(cfg.groups) if selects(group.params, name, backbone)), None)
        members.setdefault(index, []).append(parameter)
    for index, group in enumerate(cfg.groups):
        if index not in members:
            raise UserError(f"optimizer.groups[{index}].params: '{group.params}' selects no parameter (an earlier "
                            f"group may have taken them); the model's are named like "
                            f"{example_names([name for name, _ in named])}")
    groups = []
    for index in [None, *range(len(cfg.groups))]:
        if index not in members:
            continue
        spec = cfg.groups[index] if index is not None else None
        scale = spec.lr_scale if spec else 1.0
        settings = {"lr": cfg.lr * scale, "lr_scale": scale, "name": spec.params if spec else ""}
        parameters = members[index]
        if spec is not None and spec.weight_decay is not None:
            groups.append({"params": parameters, "weight_decay": spec.weight_decay, **settings})
        elif cfg.weight_decay == 0:
            groups.append({"params": parameters, "weight_decay": 0.0, **settings})
        else:
            split = (([p for p in parameters if p.ndim >= 2], cfg.weight_decay),
                     ([p for p in parameters if p.ndim < 2], 0.0))
            # An empty half is kept for the base group alone: checkpoints before optimizer.groups had both.
            groups += [{"params": chosen, "weight_decay": decay, **settings} for chosen, decay in split
                       if chosen or spec is None]
    return groups


def build_optimizer(cfg: OptimizerSection, groups: list[dict]) -> torch.optim.Optimizer:
    """The named torch optimizer over `groups`; a built-in one gets its fused kernel where torch
    offers one for the parameters' device (adam, adamw, sgd on CPU and CUDA)."""
    component = OPTIMIZERS[cfg.name]
    options = cfg.own_values()
    device = next(p for group in groups for p in group["params"]).device
    if component.origin == "built-in":
        if "fused" in inspect.signature(component.factory).parameters and device.type in ("cpu", "cuda"):
            options["fused"] = True
        return component.factory(groups, lr=cfg.lr, **options)
    try:
        optimizer = component.factory(groups, lr=cfg.lr, **options)
    except Exception as error:
        raise UserError(f"optimizer.name '{cfg.name}' failed to build: {type(error).__name__}: {error}") from None
    if not isinstance(optimizer, Optimizer):
        raise UserError(f"optimizer.name '{cfg.name}' returned {type(optimizer).__name__}, not a torch.optim."
                        "Optimizer; name an optimizer class (its first argument the parameter groups)")
    return optimizer


class StepConfig(SchedulerSection):
    step_size: PositiveInt = 1000
    """optimizer steps between drops"""
    gamma: Decay = 0.1
    """lr multiplier at each drop"""


class MultiStepConfig(SchedulerSection):
    milestones: tuple[PositiveInt, ...] = (1000,)
    """optimizer steps (after warmup) at which the lr drops, increasing"""
    gamma: Decay = 0.1
    """lr multiplier at each drop"""

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: tuple[int, ...]) -> tuple[int, ...]:
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"{list(milestones)} must be increasing step numbers of at least 1")
        return milestones


class ExponentialConfig(SchedulerSection):
    decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.999
    """lr multiplier per optimizer step"""


class CosineConfig(SchedulerSection):
    min_lr: NonNegativeFloat = 0.0
    """the lr reached at the last step"""


class OneCycleConfig(SchedulerSection):
    pct_start: Decay = 0.3
    """fraction of the steps spent rising to lr"""


class PlateauConfig(SchedulerSection):
    gamma: Decay = 0.1
    """lr multiplier at each drop"""
    patience: NonNegativeInt = 2
    """validations without improvement of train.monitor before a drop"""


@SCHEDULERS.register("constant", "the optimizer's lr throughout (after warmup)", SchedulerSection)
def constant(optimizer: Optimizer, total_steps: int, mode: str) -> None:
    return None  # nothing to step: the lr stays as the optimizer (or the warmup) left it


@SCHEDULERS.register("step", "multiply the lr by gamma every step_size steps", StepConfig)
def step(optimizer: Optimizer, total_steps: int, mode: str, step_size: int, gamma: float) -> LRScheduler:
    return lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@SCHEDULERS.register("multistep", "multiply the lr by gamma at each of the milestones (steps)",
                    MultiStepConfig)
def multistep(optimizer: Optimizer, total_steps: int, mode: str, milestones: tuple[int, ...],
              gamma: float) -> LRScheduler:
    return lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


@SCHEDULERS.register("exponential", "multiply the lr by decay after every step", ExponentialConfig)
def exponential(optimizer: Optimizer, total_steps: int, mode: str, decay: float) -> LRScheduler:
    return lr_scheduler.ExponentialLR(optimizer, gamma=decay)


@SCHEDULERS.register("cosine", "cosine decay from lr to min_lr over the run (each of optimizer.groups to its "
                    "share of min_lr)", CosineConfig)
def cosine(optimizer: Optimizer, total_steps: int, mode: str, min_lr: float) -> LRScheduler:
    # The floor as a fraction of optimizer.lr (every group's lr over its lr_scale), so a group at
    # lr_scale 0.1 ends at 0.1 x min_lr.
    first = optimizer.param_groups[0]
    floor = min_lr * first.get("lr_scale", 1.0) / first["lr"]

    def factor(step: int) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("onecycle", "rise from lr/25 to lr over pct_start of the run, then anneal (cosine) "
                    "to lr/2.5e5", OneCycleConfig)
def onecycle(optimizer: Optimizer, total_steps: int, mode: str, pct_start: float) -> LRScheduler:
    max_lr = [group["lr"] for group in optimizer.param_groups]
    # One more step than the run takes: torch raises if stepped past total_steps.
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps + 1, pct_start=pct_start,
                                   anneal_strategy="cos", cycle_momentum=False)


@SCHEDULERS.register("plateau", "multiply the lr by gamma when train.monitor stops improving for "
                    "patience validations", PlateauConfig)
def plateau(optimizer: Optimizer, total_steps: int, mode: str, gamma: float, patience: int) -> LRScheduler:
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=gamma, patience=patience)


def run_length(micro_batches_in_epoch: int | None, accumulate: int, epochs: int,
               max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps in the run): the span a schedule covers. A stream
    that cannot know its length runs train.max_steps, as one epoch."""
    if micro_batches_in_epoch is None:
        if not max_steps:
            raise UserError("train.max_steps: this data stream does not know its length, so the run needs a "
                            "number of optimizer steps; set train.max_steps")
        return max_steps, max_steps
    in_epoch = steps_per_epoch(micro_batches_in_epoch, accumulate)
    return in_epoch, max_steps or in_epoch * epochs


class LRSchedule:
    """Linear warmup for `warmup_steps`, then the named torch scheduler (none for constant).

    `after_step` runs once per optimizer step; `after_validation` feeds the monitored metric
    to a plateau scheduler, the one kind that steps on validations instead of steps. The steps
    taken are counted by the run (its position), not here.
    """

    def __init__(self, cfg: SchedulerSection, optimizer: Optimizer, total_steps: int, monitor_mode: str):
        self.optimizer = optimizer
        self.warmup_steps = cfg.warmup_steps
        self.main = SCHEDULERS[cfg.name].factory(optimizer, total_steps=max(1, total_steps - cfg.warmup_steps),
                                                 mode=monitor_mode, **cfg.own_values())
        self.on_plateau = isinstance(self.main, lr_scheduler.ReduceLROnPlateau)
        # Built after the main scheduler so that its lr (base / warmup_steps) is the one in force.
        self.warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / cfg.warmup_steps, end_factor=1.0,
                                            total_iters=cfg.warmup_steps) if cfg.warmup_steps else None
        self._first_lrs = [group["lr"] for group in optimizer.param_groups]  # where a replay starts

    def after_step(self, steps_taken: int) -> None:
        """`steps_taken`: optimizer steps so far, this one included."""
        if steps_taken <= self.warmup_steps:
            self.warmup.step()
        elif self.main is not None and not self.on_plateau:
            self.main.step()

    def after_validation(self, value: float, steps_taken: int) -> None:
        if self.on_plateau and steps_taken >= self.warmup_steps:
            self.main.step(value)

    @property
    def lrs(self) -> list[float]:
        """The lr of every parameter group, in the optimizer's order."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def named_lrs(self) -> dict[str, float]:
        """What a record reports: `lr`, the base group's (the head's when the backbone has a group
        of its own), and `lr/<params>` for each of optimizer.groups."""
        named: dict[str, float] = {}
        for group in self.optimizer.param_groups:
            key = f"lr/{group['name']}" if group.get("name") else "lr"
            named.setdefault(key, group["lr"])
        if "lr" not in named:  # every parameter is in a configured group: the head's speaks for the run
            named = {"lr": named.get("lr/head", self.optimizer.param_groups[0]["lr"]), **named}
        return named

    def state_dict(self) -> dict:
        return {"main": self.main.state_dict() if self.main is not None else None,
                "warmup": self.warmup.state_dict() if self.warmup else None}

    def load_state_dict(self, state: dict, steps_taken: int) -> None:
        """Replay the `steps_taken` over the schedule this config builds: the same arithmetic as
        the run itself (so an exact resume gets the same lr to the bit), and a run extended with
        more epochs anneals over its new length. Plateau's counters and lr come from the state."""
        for group, lr in zip(self.optimizer.param_groups, self._first_lrs):
            group["lr"] = lr  # the schedulers' formulas continue from the group's current lr
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            for step in range(1, steps_taken + 1):
                self.after_step(step)
        if self.on_plateau:
            self.main.load_state_dict(state["main"])
            for group, lr in zip(self.optimizer.param_groups, state["main"]["_last_lr"]):
                group["lr"] = lr
