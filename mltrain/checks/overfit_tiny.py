"""Overfit a tiny fixed subset: the check to run before any long training.

It looks at three things a broken setup gets wrong: the loss at initialisation (about ln C for
C classes with a softmax head), whether gradients reach every weight, and whether the model can
drive the loss on a handful of samples to almost nothing.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..devices import pick_device
from ..startup import prepare
from .probes import TINY_SAMPLES, TINY_STEPS, gradient_flow, loss_at_init, memorise, without_regularisation
from .result import CheckResult, passed


def overfit_tiny(cfg: Config, samples: int = TINY_SAMPLES, steps: int = TINY_STEPS) -> dict[str, Any]:
    """Train on the first `samples` training samples, full batch, for up to `steps` steps
    with the config's optimizer at a constant lr. Returns a report with a list of checks."""
    cfg = without_regularisation(cfg)
    prepared = prepare(cfg, pick_device(cfg.train.device))
    x, y = prepared.data.subset("train", samples).splits["train"]
    learner = prepared.learner

    init = loss_at_init(learner, x, y)
    flow = gradient_flow(learner, x, y)
    learner.update()  # the first step of memorising, on the gradients just checked
    run = memorise(learner, x, y, steps, init.values["loss"], steps_taken=1)
    final_loss = run.final["tiny/loss"]
    checks = [init, flow, CheckResult(
        "loss falls below 1% of its initial value", "pass" if run.loss_reached else "fail",
        f"{run.initial_loss:.4f} -> {final_loss:.4g} in {run.steps} steps (target < {run.target:.4g})")]
    if run.needs_every_target:
        checks.append(CheckResult("accuracy on the subset reaches 100%", "pass" if run.accuracy_reached else "fail",
                                  f"{run.final['tiny/accuracy']:.1%} of {len(y)} samples"))
    ok = passed(checks)
    return {
        "passed": ok, "samples": len(y), "steps": run.steps, "initial_loss": run.initial_loss,
        "expected_initial_loss": init.values["expected"], "final_loss": final_loss,
        "final_accuracy": run.final.get("tiny/accuracy"), "lr": cfg.optimizer.lr,
        "checks": [check.as_dict() for check in checks],
        "hint": None if ok else flow.fix if flow.status == "fail" else run.advice(cfg),
    }
