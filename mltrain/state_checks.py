"""A checkpoint's parts checked against what its config builds, before any is loaded: a damaged
or edited file gives a one-line exit-2 message naming the file and the part, never a crash
inside an optimizer kernel."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import UserError
from .learner import Learner
from .optim import build_optimizer, parameter_groups
from .schema import OptimizerSection

DAMAGED = "the file is damaged or was edited; use a checkpoint as `mltrain fit` wrote it"


def averaged_weights(checkpoint: dict, path: Path) -> dict | None:
    averaged = checkpoint["ema"]
    if averaged is None:
        return None
    n_averaged = averaged.get("n_averaged") if isinstance(averaged, dict) else None
    if isinstance(n_averaged, torch.Tensor) and n_averaged.numel() == 1 and not n_averaged.is_floating_point():
        n_averaged = int(n_averaged)
    if not isinstance(averaged, dict) or isinstance(n_averaged, bool) or not isinstance(n_averaged, int) \
            or n_averaged < 0:
        raise UserError(f"{path}: the averaged (EMA) weights need 'weights' and a count 'n_averaged'; {DAMAGED}")
    return averaged


def _shape(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__


def check_tensors(what: str, expected: dict[str, torch.Tensor], saved: Any, path: Path) -> None:
    """`saved` has exactly the names of `expected`, each a tensor of its shape and dtype."""
    if not isinstance(saved, dict):
        raise UserError(f"{path}: {what} are not a mapping of names to tensors; {DAMAGED}")
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(map(str, set(saved) - set(expected)))
    if missing or unexpected:
        listed = "; ".join(f"{kind} {', '.join(names[:3])}" for kind, names in (("missing", missing),
                                                                                 ("unexpected", unexpected)) if names)
        raise UserError(f"{path}: {what} do not fit the model its config builds ({listed})")
    for name, tensor in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape or value.dtype != tensor.dtype:
            raise UserError(f"{path}: {what}: {name} is {_shape(value)}, the model its config builds has "
                            f"{_shape(tensor)}; {DAMAGED}")


def _same_kind(built: Any, saved: Any) -> bool:
    """Whether a saved optimizer setting has the type the optimizer expects (a number, a flag...)."""
    if isinstance(built, bool) or built is None:
        return saved is None or isinstance(saved, bool)
    if isinstance(built, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(built, (tuple, list)):
        return isinstance(saved, (tuple, list)) and len(saved) == len(built) \
            and all(_same_kind(b, s) for b, s in zip(built, saved))
    return True


def _kept_per_parameter(optimizer: OptimizerSection, device: torch.device) -> dict[bool, set[str]]:
    """The state the configured optimizer keeps for a parameter, by whether the parameter is a
    matrix (or more) or a vector: seen after one step of it on a 1x1 weight and a bias. Empty
    for an optimizer that cannot take that step (one of your own that needs a closure, say)."""
    probe = nn.Module()
    probe.weight = nn.Parameter(torch.zeros(1, 1, device=device))
    probe.bias = nn.Parameter(torch.zeros(1, device=device))
    for parameter in probe.parameters():
        parameter.grad = torch.zeros_like(parameter)
    try:
        built = build_optimizer(optimizer, parameter_groups(probe, optimizer.model_copy(update={"groups": ()})))
        built.step()
    except Exception:  # noqa: BLE001 - whatever it raises, its checkpoints are checked without this
        return {}
    return {parameter.ndim >= 2: set(built.state[parameter]) for parameter in probe.parameters()}


def check_optimizer_state(learner: Learner, saved: Any, path: Path, optimizer: OptimizerSection) -> None:
    """Groups of the same sizes, settings of the right types, every per-parameter entry with
    the state the optimizer keeps, and every per-parameter tensor either a scalar (a step count)
    or shaped like its parameter."""
    built = learner.optimizer.state_dict()
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) \
            or not isinstance(saved.get("param_groups"), list) \
            or not all(isinstance(group, dict) and isinstance(group.get("params"), list)
                       for group in saved["param_groups"]):
        raise UserError(f"{path}: the optimizer state is not a torch optimizer's state dict; {DAMAGED}")
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    if sizes != [len(group["params"]) for group in built["param_groups"]]:
        raise UserError(f"{path}: the optimizer state holds parameter groups of {sizes} parameters; the model and "
                        f"optimizer its config builds have {[len(g['params']) for g in built['param_groups']]}")
    for saved_group, built_group in zip(saved["param_groups"], built["param_groups"]):
        for key, value in built_group.items():
            if key != "params" and key in saved_group and not _same_kind(value, saved_group[key]):
                raise UserError(f"{path}: the optimizer setting {key} is {saved_group[key]!r}; {DAMAGED}")
    names = {id(parameter): name for name, parameter in learner.model.named_parameters()}
    parameters = [parameter for group in learner.optimizer.param_groups for parameter in group["params"]]
    by_index = dict(zip((index for group in saved["param_groups"] for index in group["params"]), parameters))
    kept = _kept_per_parameter(optimizer, learner.device) if saved["state"] else {}
    for index, values in saved["state"].items():
        parameter = by_index.get(index)
        if parameter is None or not isinstance(values, dict):
            raise UserError(f"{path}: the optimizer state has an entry for parameter {index!r}, which its "
                            f"parameter groups do not list; {DAMAGED}")
        missing = kept.get(parameter.ndim >= 2, set()) - set(values)
        if missing:
            raise UserError(f"{path}: the optimizer state of {names.get(id(parameter), index)} has no "
                            f"{', '.join(sorted(missing))}; {DAMAGED}")
        for key, value in values.items():
            fits = value.ndim == 0 or value.shape == parameter.shape if isinstance(value, torch.Tensor) \
                else value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
            if not fits:
                raise UserError(f"{path}: the optimizer state {key} of {names.get(id(parameter), index)} is "
                                f"{_shape(value)}, the parameter is {_shape(parameter.detach())}; {DAMAGED}")


def check_numbers(what: str, expected: dict[str, Any], saved: Any, path: Path) -> None:
    """`saved` has exactly the keys of `expected`, each a number (as a Monitor's state is)."""
    if not isinstance(saved, dict) or set(saved) != set(expected) \
            or not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in saved.values()):
        raise UserError(f"{path}: {what} should be numbers for {', '.join(expected)}; {DAMAGED}")


@contextlib.contextmanager
def loading_state(path: Path, what: str) -> Iterator[None]:
    """A state torch or our own classes refuse becomes one line naming the file and the part."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: {what} could not be restored: {detail}; {DAMAGED}") from None
