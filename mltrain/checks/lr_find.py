"""Learning-rate range test (Smith 2015, as in fastai): train briefly while the lr grows
exponentially, watch the smoothed loss, and suggest the lr where it falls fastest.

Runs through the same Learner steps as `fit`, on the training data in the run's seeded order.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import Config
from ..data.dataset import batches
from ..data.orders import epoch_order
from ..devices import pick_device
from ..freezing import Freezing
from ..learner import Learner
from ..startup import prepare

SMOOTHING = 0.98  # weight of the running loss in its exponential moving average
DIVERGED = 4.0  # stop once the smoothed loss exceeds this multiple of its best value
CHECK_EVERY = 10  # steps between looks at the loss (each one a host sync)
SKIP_START = 0.1  # fraction of the curve, at its start, never suggested: its average has seen few losses
MIN_FALL = 0.02  # no suggestion unless the loss falls by at least this fraction somewhere on the curve


def lr_find(cfg: Config, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100) -> dict[str, Any]:
    """The (lr, smoothed loss) curve and the suggested lr (None if the loss never fell)."""
    prepared = prepare(cfg, pick_device(cfg.train.device))
    return range_test(prepared.learner, *prepared.data.splits["train"], cfg, start_lr, end_lr, steps)


def range_test(learner: Learner, x: Any, y: torch.Tensor, cfg: Config, start_lr: float = 1e-7,
               end_lr: float = 10.0, steps: int = 100) -> dict[str, Any]:
    """The range test on a fresh learner and its training split (x, y), in the run's batch order,
    with what the run's first epoch freezes frozen."""
    Freezing(learner, cfg.train.freeze, cfg.train.unfreeze_at_epoch).apply(1)
    rates = [start_lr * (end_lr / start_lr) ** (i / max(steps - 1, 1)) for i in range(steps)]
    losses = torch.zeros(steps, device=learner.device)  # raw loss of each step, read in chunks
    taken, epoch, stream = 0, 0, iter(())
    scales = [group["lr"] / cfg.optimizer.lr for group in learner.optimizer.param_groups]  # optimizer.groups
    while taken < steps:
        try:
            xb, yb = next(stream)
        except StopIteration:
            epoch += 1
            stream = batches(x, y, cfg.data.batch_size, epoch_order(len(y), cfg.seed, epoch))
            continue
        for group, scale in zip(learner.optimizer.param_groups, scales):
            group["lr"] = rates[taken] * scale
        losses[taken] = learner.step(xb, yb)[0]
        taken += 1
        if taken % CHECK_EVERY == 0 and _diverged(smoothed(losses[:taken].tolist())):
            break
    curve = smoothed(losses[:taken].tolist())
    return {"lrs": rates[:taken], "losses": curve, "suggested_lr": suggest(rates[:taken], curve),
            "steps": taken, "batch_size": cfg.data.batch_size, "optimizer": cfg.optimizer.name}


def smoothed(raw: list[float]) -> list[float]:
    """Bias-corrected exponential moving average; non-finite losses stay non-finite."""
    average, out = 0.0, []
    for i, loss in enumerate(raw, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        out.append(average / (1 - SMOOTHING ** i))
    return out


def _diverged(curve: list[float]) -> bool:
    finite = [loss for loss in curve if math.isfinite(loss)]
    return len(finite) < len(curve) or (bool(finite) and finite[-1] > DIVERGED * min(finite))


def suggest(lrs: list[float], curve: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest against log(lr), before its minimum and after the
    first SKIP_START of the curve (where the moving average is still mostly noise); None when the
    loss never falls by MIN_FALL."""
    start = int(SKIP_START * len(curve))
    finite = [i for i, loss in enumerate(curve) if i >= start and math.isfinite(loss)]
    if len(finite) < 3:
        return None
    lowest = min(finite, key=curve.__getitem__)
    if curve[lowest] > (1 - MIN_FALL) * curve[finite[0]]:
        return None  # a flat curve: its steepest point is noise
    slopes = {i: (curve[i + 1] - curve[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(start, lowest)}
    if not slopes or min(slopes.values()) >= 0:
        return None
    return lrs[min(slopes, key=slopes.__getitem__)]
