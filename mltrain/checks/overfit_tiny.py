"""Overfit a tiny fixed subset: the check to run before any long training.

It looks at three things a broken setup gets wrong: the loss at initialisation (about ln C for
C classes with a softmax head), whether gradients reach every weight, and whether the model can
drive the loss on a handful of samples to almost nothing.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import Config, updated
from ..devices import pick_device
from ..setup import prepare

LOSS_DROP = 0.01  # pass when the loss falls below this fraction of its initial value
INIT_TOLERANCE = 0.25  # the initial loss may differ from the expected one by this fraction
CHECK_EVERY = 25  # steps between looks at the loss (each one a host sync)


def _without_regularisation(cfg: Config) -> Config:
    """Dropout, label smoothing, weight averaging and augmentation off: the subset must be memorised."""
    return updated(cfg, {"model.dropout": 0.0, "data.augment": (), "train.label_smoothing": 0.0, "train.ema": None})


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"name": name, "status": status, "detail": detail}


def overfit_tiny(cfg: Config, samples: int = 32, steps: int = 500) -> dict[str, Any]:
    """Train on the first `samples` training samples, full batch, for up to `steps` steps
    with the config's optimizer at a constant lr. Returns a report with a list of checks."""
    cfg = _without_regularisation(cfg)
    prepared = prepare(cfg, pick_device(cfg.train.device))
    x, y = prepared.data.subset("train", samples).splits["train"]
    learner = prepared.learner
    classifies = learner.head.classifies

    initial = learner.evaluate(x, y, "tiny")
    initial_loss = initial["tiny/loss"]
    expected = learner.head.initial_loss(y)
    checks = []
    near = abs(initial_loss - expected) <= INIT_TOLERANCE * max(expected, 1e-8)
    what = "ln(classes)" if cfg.model.head == "softmax" else "ln 2 per output" if cfg.model.head == "sigmoid" \
        else "the mean square of the targets"
    checks.append(_check("loss at init", "pass" if near else "warn",
                         f"{initial_loss:.4f}, expected about {expected:.4f} ({what})"
                         + ("" if near else "; the output layer may be initialised too large")))

    learner.backward(x, y)
    missing = [name for name, p in learner.model.named_parameters()
               if p.requires_grad and (p.grad is None or not bool(p.grad.abs().sum() > 0))]
    learner.update()
    checks.append(_check("gradients reach every weight", "fail" if missing else "pass",
                         f"no gradient for: {', '.join(missing)}" if missing
                         else f"all {sum(1 for _ in learner.model.parameters())} parameter tensors"))

    steps_run, final = 1, initial
    target = LOSS_DROP * initial_loss
    for steps_run in range(2, steps + 1):
        learner.step(x, y)
        if steps_run % CHECK_EVERY == 0 or steps_run == steps:
            final = learner.evaluate(x, y, "tiny")
            if not math.isfinite(final["tiny/loss"]):
                break
            if final["tiny/loss"] < target and (not classifies or final["tiny/accuracy"] == 1.0):
                break
    if steps == 1:
        final = learner.evaluate(x, y, "tiny")
    final_loss = final["tiny/loss"]
    checks.append(_check("loss falls below 1% of its initial value",
                         "pass" if final_loss < target else "fail",
                         f"{initial_loss:.4f} -> {final_loss:.4g} in {steps_run} steps (target < {target:.4g})"))
    if classifies:
        accuracy = final["tiny/accuracy"]
        checks.append(_check("accuracy on the subset reaches 100%", "pass" if accuracy == 1.0 else "fail",
                             f"{accuracy:.1%} of {len(y)} samples"))
    passed = all(check["status"] != "fail" for check in checks)
    return {
        "passed": passed, "samples": len(y), "steps": steps_run, "initial_loss": initial_loss,
        "expected_initial_loss": expected, "final_loss": final_loss,
        "final_accuracy": final.get("tiny/accuracy"), "lr": cfg.optimizer.lr, "checks": checks,
        "hint": None if passed else _hint(checks, cfg, initial_loss, final_loss),
    }


def _hint(checks: list[dict[str, str]], cfg: Config, initial_loss: float, final_loss: float) -> str:
    failed = {check["name"] for check in checks if check["status"] == "fail"}
    if "gradients reach every weight" in failed:
        return "some weights get no gradient: look for layers that are built but never used in forward()"
    if not math.isfinite(final_loss) or final_loss > initial_loss:
        return (f"the loss rose or diverged: try a smaller optimizer.lr (now {cfg.optimizer.lr:g}), "
                f"e.g. --set optimizer.lr={cfg.optimizer.lr / 10:g}")
    return (f"the {cfg.model.arch} could not memorise the subset: try a larger optimizer.lr "
            f"(now {cfg.optimizer.lr:g}), more --steps, or a bigger model")
