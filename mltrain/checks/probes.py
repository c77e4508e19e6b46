"""Probes of a learner that overfit-tiny and preflight share: the loss at initialisation, whether
gradients reach every weight, and whether a tiny subset can be memorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import Config, updated
from ..learner import Learner
from .result import CheckResult

TINY_SAMPLES = 32  # training samples in the subset to memorise
TINY_STEPS = 500  # most full-batch optimizer steps spent memorising it
LOSS_DROP = 0.01  # memorised: the loss fell below this fraction of its initial value
INIT_TOLERANCE = 0.25  # the initial loss may differ from the expected one by this fraction
CHECK_EVERY = 25  # steps between looks at the loss (each one a host sync)
SHOWN_NAMES = 8  # parameter names listed in a one-line detail


def without_regularisation(cfg: Config) -> Config:
    """Dropout, label smoothing, weight averaging and augmentation off: the subset must be memorised."""
    return updated(cfg, {"model.dropout": 0.0, "data.augment": (), "train.label_smoothing": 0.0, "train.ema": None})


def loss_at_init(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """The untrained model's loss on (x, y) against what near-uniform outputs give."""
    initial = learner.evaluate(x, y, "init")["init/loss"]
    expected = learner.criterion.initial_loss(y)
    values = {"loss": initial, "expected": expected}
    detail = f"{initial:.4f}, expected about {expected:.4f} ({learner.criterion.initial_loss_is})"
    if not math.isfinite(initial):
        return CheckResult("loss at init", "fail", detail, "the untrained model's loss is not finite: look for "
                           "NaN or inf in the inputs, or in the model's forward (a log of 0, a division by 0)", values)
    if abs(initial - expected) <= INIT_TOLERANCE * max(expected, 1e-8):
        return CheckResult("loss at init", "pass", detail, values=values)
    return CheckResult("loss at init", "warn", detail + "; the output layer may be initialised too large",
                       "scale the last layer's initial weights down (e.g. x0.1) and zero its bias, so the first "
                       "outputs are near uniform (near 0 for a linear head)", values)


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")


def gradient_flow(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> CheckResult:
    """One backward pass on (x, y): every trainable parameter must get a finite, non-zero gradient.
    The gradients are left in place; the caller steps or drops them."""
    learner.forward_backward(x, y)
    missing, zero, non_finite = [], [], []
    trainable = [(name, p) for name, p in learner.model.named_parameters() if p.requires_grad]
    for name, parameter in trainable:
        if parameter.grad is None:
            missing.append(name)
        elif not bool(torch.isfinite(parameter.grad).all()):
            non_finite.append(name)
        elif not bool(parameter.grad.abs().sum() > 0):
            zero.append(name)
    values = {"parameters": len(trainable), "no_gradient": missing, "zero_gradient": zero,
              "non_finite_gradient": non_finite}
    if not (missing or zero or non_finite):
        return CheckResult("gradients reach every weight", "pass", f"all {len(trainable)} parameter tensors"
                           if len(trainable) > 1 else "the one parameter tensor", values=values)
    problems = [f"{what}: {_listed(names)}" for what, names in (("no gradient for", missing),
                                                                 ("zero gradient for", zero),
                                                                 ("non-finite gradient for", non_finite)) if names]
    fix = ("a NaN or inf gradient: look for a log of 0 or a division by 0 in forward(), or inputs with NaN"
           if non_finite and not (missing or zero) else
           "look for layers built but never used in forward(), or whose output is multiplied by 0, detached "
           "or cut off (a ReLU that is always off)")
    return CheckResult("gradients reach every weight", "fail", "; ".join(problems), fix, values)


@dataclass(frozen=True)
class Memorisation:
    """How far full-batch training on a tiny subset got."""

    initial_loss: float
    final: dict[str, float]  # tiny/loss, and tiny/accuracy for a classifier
    steps: int  # optimizer steps taken, including any before memorise() was called
    needs_every_target: bool  # a class per sample must all come out right; a class per position
    # (next characters) need not: windows that share a context may continue differently

    @property
    def target(self) -> float:
        return LOSS_DROP * self.initial_loss

    @property
    def loss_reached(self) -> bool:
        return self.final["tiny/loss"] < self.target

    @property
    def accuracy_reached(self) -> bool:
        return not self.needs_every_target or self.final["tiny/accuracy"] == 1.0

    def advice(self, cfg: Config) -> str:
        """What to try when the subset was not memorised."""
        lr = cfg.optimizer.lr
        scale = ("; for a regression, also look at the targets' scale: they are standardised with the "
                 "training mean and std, so a few huge values or outliers still dominate the squared error"
                 if cfg.model.head == "linear" else "")
        if not math.isfinite(self.final["tiny/loss"]) or self.final["tiny/loss"] > self.initial_loss:
            return (f"the loss rose or diverged: try a smaller optimizer.lr (now {lr:g}), "
                    f"e.g. --set optimizer.lr={lr / 10:g}{scale}")
        return (f"the {cfg.model.arch} could not memorise the subset: try a larger optimizer.lr (now {lr:g}), "
                f"more steps (mltrain overfit-tiny --steps), or a bigger model{scale}")


def memorise(learner: Learner, x: torch.Tensor, y: torch.Tensor, steps: int, initial_loss: float,
             steps_taken: int = 0) -> Memorisation:
    """Full-batch steps on (x, y) until the loss falls below LOSS_DROP of `initial_loss` (and a
    classifier of samples gets every one right), for `steps` steps in all."""
    final = None
    steps_run = steps_taken
    needs_every_target = learner.criterion.classifies and y.dim() == 1
    for steps_run in range(steps_taken + 1, steps + 1):
        learner.step(x, y)
        if steps_run % CHECK_EVERY == 0 or steps_run == steps:
            final = learner.evaluate(x, y, "tiny")
            if not math.isfinite(final["tiny/loss"]):
                break
            run = Memorisation(initial_loss, final, steps_run, needs_every_target)
            if run.loss_reached and run.accuracy_reached:
                break
    if final is None:
        final = learner.evaluate(x, y, "tiny")
    return Memorisation(initial_loss, final, steps_run, needs_every_target)
