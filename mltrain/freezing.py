"""`train.freeze` and `train.unfreeze_at_epoch`: which parameters do not train, and until when.

A frozen parameter stays in the optimizer (so its state and a checkpoint keep their shape) with
`requires_grad` off, so it gets no gradient, no update and no weight decay. Batch norms whose
parameters are all frozen keep their running statistics, in eval mode while frozen. Whether a
part is frozen is a function of the epoch alone, so a resumed run freezes exactly as the one
that never stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from .errors import UserError
from .parameter_sets import example_names, selects

if TYPE_CHECKING:
    from .learner import Learner


class Freezing:
    def __init__(self, learner: Learner, patterns: tuple[str, ...], unfreeze_at_epoch: int | None):
        self.learner, self.unfreeze_at_epoch = learner, unfreeze_at_epoch
        named = dict(learner.model.named_parameters())
        for pattern in patterns:
            if not any(selects(pattern, name, learner.backbone) for name in named):
                raise UserError(f"train.freeze: '{pattern}' selects no parameter; the model's are named like "
                                f"{example_names(list(named))}")
        frozen = [name for name in named if any(selects(pattern, name, learner.backbone) for pattern in patterns)]
        if frozen and len(frozen) == len(named):
            raise UserError(f"train.freeze: {', '.join(patterns)} selects every parameter, leaving nothing to train; "
                            "freeze a part (backbone, or patterns such as layer1.*)")
        self.names = frozen
        self.parameters = [named[name] for name in frozen]
        chosen = {id(parameter) for parameter in self.parameters}
        self.norms = [module for module in learner.model.modules()
                      if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine
                      and all(id(parameter) in chosen for parameter in module.parameters(recurse=False))]
        self.applied: bool | None = None  # frozen as of the last apply; None before the first

    def frozen_in(self, epoch: int) -> bool:
        return bool(self.parameters) and (self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch)

    def apply(self, epoch: int) -> bool:
        """Freeze or thaw for `epoch` (from 1); True when that changed which parameters train (or,
        on the first call of a run with train.freeze, always: it says where the run stands)."""
        frozen, first = self.frozen_in(epoch), self.applied is None
        if frozen == bool(self.applied):
            self.applied = frozen
            return first and bool(self.parameters)
        for parameter in self.parameters:
            parameter.requires_grad_(not frozen)
        self.learner.frozen_norms = self.norms if frozen else []
        self.learner.model.eval()  # the next step's train() puts the frozen norms in eval mode
        self.applied = frozen
        return True

    def describe(self, epoch: int) -> str:
        values = sum(parameter.numel() for parameter in self.parameters)
        what = f"{len(self.parameters)} parameter tensors ({values:,} values)"
        if not self.frozen_in(epoch):
            return f"epoch {epoch}: unfrozen {what}; every parameter trains"
        until = f"until epoch {self.unfreeze_at_epoch}" if self.unfreeze_at_epoch else "for the whole run"
        norms = f", {len(self.norms)} batch norms in eval mode" if self.norms else ""
        return f"frozen {until}: {what}{norms}"
