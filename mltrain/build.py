"""From a config to a learner, one plain step at a time: the loss the head names, the model
sized to it, the model's parameter groups, the optimizer over them. Each step is a function of
plain arguments; the config is unpacked here and nowhere below."""

from __future__ import annotations

import torch

from .config import Config
from .data import DataSpec
from .learner import Learner
from .losses import build_loss
from .models import build_model
from .optim import build_optimizer, parameter_groups


def build_learner(cfg: Config, spec: DataSpec, device: torch.device, training: bool = True,
                  target_scale: dict[str, list[float]] | None = None) -> Learner:
    """`training=False` (scoring, generating, exporting) builds no optimizer: torch's first
    optimizer imports torch._dynamo, a second of start-up. `target_scale`: the data state's,
    which a regression loss learns and predicts with."""
    criterion = build_loss(cfg.model.head, spec, cfg.train.label_smoothing, target_scale)
    model = build_model(cfg.model, spec, criterion.num_outputs).to(device)
    optimizer = build_optimizer(cfg.optimizer, parameter_groups(model, cfg.optimizer.weight_decay)) \
        if training else None
    return Learner(model, criterion, optimizer, cfg.train.precision, device, cfg.train.grad_clip, cfg.train.ema,
                   cfg.train.compile)
