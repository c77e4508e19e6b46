"""Model, loss, optimizer and precision together: one training step, and evaluation.

`fit`, `eval`, overfit-tiny and lr-find all train and score through this one class.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .data.dataset import batches
from .data.stream import CUDA_GRAPH_MODES
from .errors import UserError
from .losses import Loss
from .metrics import Accumulator

EVAL_BATCH_SIZE = 1024  # samples per forward pass when scoring; no gradients are kept
NO_CONTEXT = contextlib.nullcontext()  # reusable: entering it does nothing


def compile_mode(setting: bool | str) -> str | None:
    """The torch.compile mode `train.compile` names: None for false (eager), default for true."""
    if setting is True:
        return "default"
    return setting or None


def autocast_for(precision: str, device: torch.device):
    """Mixed precision as a context factory; fp32 runs plain."""
    if precision == "fp32":
        return lambda: NO_CONTEXT
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs a CUDA GPU (device here: {device}); "
                        "use bf16 on the CPU, or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


def _aliases_a_leaf(outputs: torch.Tensor) -> bool:
    """Whether `outputs` are a leaf tensor or a view of one, such as a parameter, which the optimizer
    step changes in place (a model that returns its bias, say)."""
    root = outputs if outputs._base is None else outputs._base
    return root.is_leaf


def _check_outputs(logits: object, x: torch.Tensor, num_outputs: int) -> None:
    """A UserError unless the model gave a tensor of `num_outputs` values per sample of `x`."""
    if not isinstance(logits, torch.Tensor) or len(logits) != len(x) or math.prod(logits.shape[1:]) != num_outputs:
        got = f"outputs of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(f"model.arch: the model returned {got} for a batch of {len(x)}; the head needs "
                        f"{num_outputs} outputs per sample (the num_outputs it was built with)")


class Learner:
    """Owns the training step: forward under autocast, loss on logits, backward (accumulated
    over micro-batches), unscale, clip, optimizer step, EMA update."""

    def __init__(self, model: nn.Module, criterion: Loss, optimizer: torch.optim.Optimizer | None, precision: str,
                 device: torch.device, grad_clip: float | None = None, ema_decay: float | None = None,
                 compile: bool | str = False, backbone: list[str] | None = None):
        self.model, self.criterion, self.optimizer, self.device = model, criterion, optimizer, device
        self.backbone = list(backbone or ())  # the parameters model.weights set (see parameter_sets)
        self.started_from: str | None = None  # what model.weights loaded, said in a new run's log
        self.frozen_norms: list[nn.Module] = []  # batch norms of frozen parts: eval mode while frozen
        self.grad_clip = grad_clip
        self.autocast = autocast_for(precision, device)
        self.mixed_precision = precision != "fp32"
        # Loss scaling only matters for fp16; without it the step bypasses the (disabled) scaler.
        self.scaling = precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.scaling)
        self.channels_last = device.type == "cuda" and _has_conv2d(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.compile_mode = compile_mode(compile)
        # A CUDA-graph replay overwrites the outputs of the one before: what the running sums and the
        # NaN guard keep across steps is copied out.
        self._copies_outputs = self.compile_mode in CUDA_GRAPH_MODES
        # Scoring keeps no graph; a sharded model needs no_grad (its gathered weights outlive the call).
        self.scoring_mode = torch.inference_mode
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) \
            if ema_decay else None
        self.run_through(model)

    def _forget_checked_outputs(self) -> None:
        """The training outputs are checked again at the next step (a new model to train through)."""
        self._checked_shapes: tuple = ()  # (input shape, output shape) of the last outputs checked
        self._outputs_alias_a_leaf = False

    def run_through(self, wrapper: nn.Module) -> None:
        """Train through `wrapper` (`model` itself, or a distribution strategy's module around it),
        compiled if asked; `model` keeps the plain parameter names checkpoints use.

        Compiled, the model alone is captured together with its loss in one graph, whose backward
        AOTAutograd compiles with it; a wrapper (DDP) is compiled as a module, the way torch's
        DDP support (graphs split at its gradient buckets) expects it."""
        self.forward_model = wrapper
        self._loss_and_outputs = self._eager_loss_and_outputs
        if self.compile_mode is not None and wrapper is self.model:
            self._compiled_loss_and_outputs = torch.compile(self._checked_loss_and_outputs, mode=self.compile_mode)
            self._loss_and_outputs = self._compiled_step_loss_and_outputs
        elif self.compile_mode is not None:
            self.forward_model = torch.compile(wrapper, mode=self.compile_mode)
        self._forget_checked_outputs()

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation, best.pt and eval use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        """Classes, or values in the target's units: what the metrics compare with y."""
        return self.criterion.predict(logits)

    def _outputs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.mixed_precision:
            return model(x)
        with self.autocast():
            return model(x)

    def _forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self._outputs(model, x)
        _check_outputs(logits, x, self.criterion.num_outputs)
        return self.criterion.loss(logits.float(), y), logits

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor,
                         scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one micro-batch's gradient, its loss weighted by `scale` (1/micro-batches per step).
        Returns the unscaled loss and the logits, their graph spent by backward (not detached: a
        detach is an op per step, and the running sums and the NaN guard read them under no_grad);
        the logits as computed even after the optimizer step (the running accuracy reads them
        later), and both as computed even after the next step's CUDA-graph replay."""
        if not self.model.training:  # a check, not a call: train() walks every module
            self.model.train()
            for norm in self.frozen_norms:  # frozen: their running statistics stay as loaded
                norm.eval()
        loss, logits = self._loss_and_outputs(x, y)
        weighted = loss * scale if scale != 1.0 else loss
        (self.scaler.scale(weighted) if self.scaling else weighted).backward()
        if self._copies_outputs:
            return loss.detach().clone(), logits.detach().clone()
        return loss, logits.detach().clone() if self._outputs_alias_a_leaf else logits

    def _eager_loss_and_outputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training forward and loss, the outputs checked only when their shapes change."""
        logits = self._outputs(self.forward_model, x)
        if not isinstance(logits, torch.Tensor) or (x.shape, logits.shape) != self._checked_shapes:
            self._check_training_outputs(logits, x)
        return self.criterion.loss(logits.float(), y), logits

    def _checked_loss_and_outputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What torch.compile captures: forward and loss, the outputs checked as it traces them."""
        return self._forward(self.forward_model, x, y)

    def _compiled_step_loss_and_outputs(self, x: torch.Tensor,
                                        y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The compiled forward and loss; whether the outputs alias a parameter is asked again only
        when their shapes change."""
        loss, logits = self._compiled_loss_and_outputs(x, y)
        if (x.shape, logits.shape) != self._checked_shapes:
            self._checked_shapes, self._outputs_alias_a_leaf = (x.shape, logits.shape), _aliases_a_leaf(logits)
        return loss, logits

    def _check_training_outputs(self, logits: object, x: torch.Tensor) -> None:
        """The outputs' check, and whether the step would change them in place: made again only when
        the shapes change, since a model computes its outputs the same way batch after batch."""
        _check_outputs(logits, x, self.criterion.num_outputs)
        self._checked_shapes, self._outputs_alias_a_leaf = (x.shape, logits.shape), _aliases_a_leaf(logits)

    def update(self, want_grad_norm: bool = False) -> torch.Tensor | None:
        """Clip, step and clear the gradients accumulated since the last update. Returns the
        gradient norm before clipping when clipping or asked for (a device tensor)."""
        grad_norm = None
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        elif want_grad_norm:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        if self.scaling:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return grad_norm

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on one batch; its loss and logits detached."""
        loss, logits = self.forward_backward(x, y)
        self.update()
        return loss.detach(), logits.detach()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "backbone": self.backbone, "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": {"weights": self.ema.module.state_dict(), "n_averaged": self.ema.n_averaged}
                if self.ema is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"]["weights"])
            self.ema.n_averaged.fill_(int(state["ema"]["n_averaged"]))

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, split: str) -> dict[str, float]:
        """Mean loss (and accuracy for classifiers) over a split, in eval mode."""
        return self._score(x, y, split, keep_predictions=False)[0]

    def evaluate_with_predictions(self, x: torch.Tensor, y: torch.Tensor,
                                  split: str) -> tuple[dict[str, float], torch.Tensor | None]:
        """The metrics and the predicted classes of every sample (None for regression)."""
        return self._score(x, y, split, keep_predictions=self.criterion.classifies)

    def _score(self, x: torch.Tensor, y: torch.Tensor, split: str,
               keep_predictions: bool) -> tuple[dict[str, float], torch.Tensor | None]:
        with self.scoring_mode():
            return self._scored(x, y, split, keep_predictions)

    def _scored(self, x: torch.Tensor, y: torch.Tensor, split: str,
                keep_predictions: bool) -> tuple[dict[str, float], torch.Tensor | None]:
        model = self.eval_model
        model.eval()
        totals = Accumulator(self.device, self.criterion.classifies)
        predicted = []
        for xb, yb in batches(x, y, EVAL_BATCH_SIZE):
            loss, logits = self._forward(model, xb, yb)
            predictions = self.predictions(logits)
            totals.update(loss, predictions, yb)
            if keep_predictions:
                predicted.append(predictions)
        return totals.compute(split), torch.cat(predicted) if keep_predictions else None
