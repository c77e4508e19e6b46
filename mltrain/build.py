"""From a config to a learner, one plain step at a time: the loss the head names, the model
sized to it, its starting weights (a fresh start only), the model's parameter groups, the
optimizer over them. Each step is a function of plain arguments; the config is unpacked here and
nowhere below."""

from __future__ import annotations

import torch

from . import collector
from .config import Config
from .data import DataSpec
from .learner import Learner
from .losses import build_loss
from .models import build_model
from .optim import build_optimizer, parameter_groups
from .weights import starting_weights


def build_learner(cfg: Config, spec: DataSpec, device: torch.device, training: bool = True,
                  target_scale: dict[str, list[float]] | None = None, backbone: list[str] | None = None) -> Learner:
    """`training=False` (scoring, generating, exporting) builds no optimizer: torch's first
    optimizer imports torch._dynamo, a second of start-up. `target_scale`: the data state's,
    which a regression loss learns and predicts with. `backbone`: the parameters a checkpoint
    says its starting weights set; None for a fresh start, which reads `model.weights`."""
    criterion = build_loss(cfg.model.head, spec, cfg.train.label_smoothing, target_scale)
    model = build_model(cfg.model, spec, criterion.num_outputs)
    started_from = None
    if backbone is None:
        backbone, started_from = starting_weights(model, cfg.model)
    model = model.to(device)
    optimizer = build_optimizer(cfg.optimizer, parameter_groups(model, cfg.optimizer, backbone)) \
        if training else None
    learner = Learner(model, criterion, optimizer, cfg.train.precision, device, cfg.train.grad_clip, cfg.train.ema,
                      cfg.train.compile, backbone)
    learner.started_from = started_from
    collector.started()  # torch, its compiler (imported by the optimizer), the data and the model: all there
    return learner
