"""train.strategy fsdp: each process holds a shard of the weights, their gradients and the
optimizer state, through torch's FSDP2 (`fully_shard`). Each block of the built-in families (a
transformer or GPT block, a ResNet block, a recurrent cell) is one unit, gathered just before its
forward and backward and freed after; the root holds the rest (embeddings, head).

Checkpoints: checkpoints/last/ is written sharded, every process its own part
(`sharded_checkpoint`); best.pt stays one file of whole tensors, gathered onto rank 0, so eval,
predict, export and sample read what they always read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from . import sharded_checkpoint
from .checkpoint import load_checkpoint
from .distributed import Distributed
from .errors import UserError
from .learner import NO_CONTEXT, Learner
from .state_checks import DAMAGED, averaged_weights, check_tensors
from .strategy import PER_RANK_SEED, SingleProcess

if TYPE_CHECKING:
    import contextlib

    from .config import FSDPConfig
    from .sinks import Record
    from .state import TrainState

WHOLE_ON_RANK_0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
FUSED_KERNELS_THAT_SHARD = (torch.optim.Adam, torch.optim.AdamW)  # SGD's and Adagrad's fused kernels take no DTensor
SHARDED_ENTRIES = "model, optimizer and ema: torch.distributed.checkpoint shards in this directory"


def _builtin_blocks() -> tuple[type[nn.Module], ...]:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from .models.layers import Block

    return Block, BasicBlock, Bottleneck, nn.RNNBase


class FullySharded(SingleProcess):
    collective_forward = True  # each unit gathers its weights from every process

    def __init__(self, job: Distributed, fsdp: FSDPConfig, precision: str):
        super().__init__(job)
        self.fsdp = fsdp
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        # Weights gathered in the low precision when mixed; gradients reduced in fp32.
        self.mixed_precision = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)
        self.model: nn.Module | None = None

    def prepare(self, learner: Learner, sync_batchnorm: bool, seed: int) -> None:
        """Shard the model (and its EMA copy) in place; the optimizer is given the sharded
        parameters, which replace the whole ones."""
        names = {id(parameter): name for name, parameter in learner.model.named_parameters()}
        self._shard(learner.model)
        if learner.ema is not None:
            self._shard(learner.ema.module)
        sharded = dict(learner.model.named_parameters())
        shards_fused = isinstance(learner.optimizer, FUSED_KERNELS_THAT_SHARD)
        for group in learner.optimizer.param_groups:
            group["params"] = [sharded[names[id(parameter)]] for parameter in group["params"]]
            if group.get("fused") and not shards_fused:
                group["fused"] = False  # torch has no sharded fused kernel for it: its for-each one steps the shards
        if learner.ema is not None and any(True for _ in learner.model.buffers()):
            # Averaging sharded weights and whole buffers in one for-each call is refused: the EMA's
            # buffers follow the model's instead (AveragedModel's default).
            learner.ema.use_buffers = False
        self.model = learner.model
        learner.run_through(learner.model)
        learner.scoring_mode = torch.no_grad
        torch.manual_seed(seed * PER_RANK_SEED + self.job.rank)  # the weights were drawn alike; dropout is not

    def _shard(self, model: nn.Module) -> None:
        mesh = init_device_mesh(next(model.parameters()).device.type, (self.job.world_size,))
        for unit in self._units(model):
            fully_shard(unit, mesh=mesh, reshard_after_forward=self.fsdp.reshard_after_forward,
                        mp_policy=self.mixed_precision)
        fully_shard(model, mesh=mesh, reshard_after_forward=self.fsdp.reshard_after_forward,
                    mp_policy=self.mixed_precision)

    def _units(self, model: nn.Module) -> list[nn.Module]:
        """The modules sharded as units besides the root: those of train.fsdp.wrap's classes, else
        the built-in families' blocks; a unit inside another comes first (FSDP shards inner units
        before the ones around them)."""
        modules = [module for module in reversed(list(model.modules())) if module is not model]
        if not self.fsdp.wrap:
            blocks = _builtin_blocks()
            return [module for module in modules if isinstance(module, blocks)]
        present = {type(module).__name__ for module in modules}
        for name in self.fsdp.wrap:
            if name not in present:
                raise UserError(f"train.fsdp.wrap: the model has no module of class '{name}'; its classes: "
                                f"{', '.join(sorted(present)[:12])}")
        return [module for module in modules if type(module).__name__ in self.fsdp.wrap]

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Gradients are reduce-scattered only on a step's last micro-batch."""
        self.model.set_requires_gradient_sync(last)
        return NO_CONTEXT

    def learner_state(self, learner: Learner) -> dict[str, Any] | None:
        """Every tensor gathered whole onto rank 0 (in the CPU's memory), the optimizer state in
        torch's own layout: the checkpoint of a single process."""
        model = get_model_state_dict(learner.model, options=WHOLE_ON_RANK_0)
        optimizer = get_optimizer_state_dict(learner.model, learner.optimizer, options=WHOLE_ON_RANK_0)
        ema = get_model_state_dict(learner.ema.module, options=WHOLE_ON_RANK_0) if learner.ema is not None else None
        if not self.job.is_main:
            return None
        return {"model": model, "backbone": learner.backbone, "optimizer": _by_position(optimizer),
                "scaler": learner.scaler.state_dict(),
                "ema": {"weights": ema, "n_averaged": learner.ema.n_averaged} if ema is not None else None}

    def load_learner_state(self, learner: Learner, checkpoint: dict[str, Any]) -> None:
        """A whole checkpoint (best.pt, or a run's last.pt from one process or ddp), which every
        process read, cut into this process's shards."""
        whole = StateDictOptions(full_state_dict=True)
        set_model_state_dict(learner.model, checkpoint["model"], options=whole)
        set_optimizer_state_dict(learner.model, learner.optimizer, _by_name(checkpoint["optimizer"], learner),
                                 options=whole)
        learner.scaler.load_state_dict(checkpoint["scaler"])
        if learner.ema is not None and checkpoint["ema"] is not None:
            set_model_state_dict(learner.ema.module, checkpoint["ema"]["weights"], options=whole)
            learner.ema.n_averaged.fill_(int(checkpoint["ema"]["n_averaged"]))

    def save_training_state(self, state: TrainState, record: Record, checkpoints: Path) -> None:
        """checkpoints/last/: each process writes its shards; rank 0 the rest beside them. Each
        process's buffers are rank 0's first: the checkpoint keeps one copy of them."""
        learner = state.learner
        self.agree_on_buffers(learner)
        model, optimizer = get_state_dict(learner.model, learner.optimizer)
        shards = {"model": model, "optimizer": optimizer}
        if learner.ema is not None:
            shards["ema"] = get_model_state_dict(learner.ema.module)
        beside = {"model": None, "optimizer": None, "sharded": SHARDED_ENTRIES, "backbone": learner.backbone,
                  "scaler": learner.scaler.state_dict(),
                  "ema": {"weights": None, "n_averaged": learner.ema.n_averaged} if learner.ema is not None else None}
        sharded_checkpoint.save(shards, state.checkpoint(record, beside), checkpoints, self.job)

    def load_test_weights(self, learner: Learner, best: Path) -> None:
        """Rank 0 reads best.pt; its eval weights are sent to every process's shards."""
        weights: dict[str, torch.Tensor] = {}
        if self.job.is_main:
            checkpoint, path = load_checkpoint(best)
            averaged = averaged_weights(checkpoint, path)
            weights = averaged["weights"] if averaged else checkpoint["model"]
            check_tensors("the eval weights", learner.eval_model.state_dict(), weights, path)
        set_model_state_dict(learner.eval_model, weights,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def load_sharded_learner(learner: Learner, checkpoint: dict[str, Any], path: Path) -> None:
    """Weights, optimizer state and EMA from the shards beside `path` (an fsdp run's trainer.pt),
    into this job's learner, sharded or whole: torch.distributed.checkpoint reshards to fit."""
    directory = path.parent
    model, optimizer = get_state_dict(learner.model, learner.optimizer)
    shards = {"model": model, "optimizer": optimizer}
    averaged = averaged_weights(checkpoint, path)
    if learner.ema is not None and averaged:
        shards["ema"] = get_model_state_dict(learner.ema.module)
    sharded_checkpoint.load(shards, directory)
    set_state_dict(learner.model, learner.optimizer, model_state_dict=shards["model"],
                   optim_state_dict=shards["optimizer"])
    if "ema" in shards:
        set_model_state_dict(learner.ema.module, shards["ema"])
        learner.ema.n_averaged.fill_(int(averaged["n_averaged"]))
    if not isinstance(checkpoint.get("scaler"), dict):
        raise UserError(f"{path}: the loss-scaler state is not a mapping; {DAMAGED}")
    learner.scaler.load_state_dict(checkpoint["scaler"])


def _by_name(optimizer_state: dict[str, Any], learner: Learner) -> dict[str, Any]:
    """torch's own optimizer state (parameters numbered in the order of their groups) keyed by
    parameter name, as the distributed checkpoint's functions take it."""
    names = {id(parameter): name for name, parameter in learner.model.named_parameters()}
    ordered = [names[id(parameter)] for group in learner.optimizer.param_groups for parameter in group["params"]]
    numbers = [number for group in optimizer_state["param_groups"] for number in group["params"]]
    name_of = dict(zip(numbers, ordered))
    return {"state": {name_of[number]: value for number, value in optimizer_state["state"].items()},
            "param_groups": [{**group, "params": [name_of[number] for number in group["params"]]}
                             for group in optimizer_state["param_groups"]]}


def _by_position(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (the distributed checkpoint's layout) in
    torch's own: parameters numbered in the order of their groups."""
    number: dict[str, int] = {}
    for group in optimizer_state["param_groups"]:
        for name in group["params"]:
            number.setdefault(name, len(number))
    return {"state": {number[name]: value for name, value in optimizer_state["state"].items()},
            "param_groups": [{**group, "params": [number[name] for name in group["params"]]}
                             for group in optimizer_state["param_groups"]]}
