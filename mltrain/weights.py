"""Starting weights (`model.weights`): the zoo's published ones (a Hugging Face model's through
`from_pretrained`), a weight file (.safetensors, or a .pt/.pth state dict loaded without running
code), or another mltrain run's best.pt. They are read once, when a run starts from its config;
a checkpoint then holds the weights, so eval, predict, export and resume never read the file
again.

The tensors whose names and shapes fit the model are copied into it: they are the backbone. The
rest keep their fresh initialisation (a classifier sized to other classes): they are the head.
A file naming tensors the model does not have is refused (`model.weights_strict: false` only
reports them): it is most likely for another architecture.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .checkpoint import FORMAT as CHECKPOINT_FORMAT, Unloadable, checked_checkpoint, load_checkpoint, load_safely
from .data.sections import Statistics
from .errors import UserError
from .schema import ModelSection

if TYPE_CHECKING:
    from .config import Config

PRETRAINED = "pretrained"
WRAPPERS = ("state_dict", "model", "model_state_dict")  # keys other tools nest a state dict under
SHOWN = 6  # names listed in a message before "and N more"


def starting_weights(model: nn.Module, cfg: ModelSection) -> tuple[list[str], str | None]:
    """Copy `cfg.weights` into `model` (a fresh start only): the names of the parameters it set
    (the backbone; none without weights), and a line saying what was kept and what is new."""
    if cfg.weights is None:
        return [], None
    if cfg.weights == PRETRAINED:
        state, source = _published(model, cfg.arch)
    else:
        state, source = read_weights(Path(cfg.weights)), cfg.weights
    kept, new, unmatched = _load_fitting(model, state)
    if not kept:
        raise UserError(f"model.weights: {source}: none of its {len(state)} tensors fits this model "
                        f"({_names(state)}); it holds weights of another architecture")
    left_out = ""
    if unmatched:
        message = (f"model.weights: {source}: {len(unmatched)} of its tensors match no parameter of "
                   f"{cfg.arch} ({_names(unmatched)})")
        if cfg.weights_strict:
            raise UserError(f"{message}; it is most likely for another architecture. Set model.weights_strict: "
                            "false to load the rest anyway")
        left_out = f"; left out (weights_strict: false): {_names(unmatched)}"
    fresh = ", ".join(f"{name} {tuple(value.shape)}" for name, value in new.items())
    said = f"model.weights: kept {len(kept)} tensors from {source}" + (f"; new: {fresh}" if new else "") + left_out
    parameters = dict(model.named_parameters())
    return [name for name in kept if name in parameters], said


def _published(model: nn.Module, arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """The published weights of a zoo architecture (torchvision/, timm/, hf/) and where they came from."""
    from .models.hf import is_hf, published_weights as published_hf_weights
    from .models.zoo import published_weights, zoo_of

    if is_hf(arch):
        return published_hf_weights(arch, model)
    if zoo_of(arch) is None:
        raise UserError(f"model.weights: pretrained: '{arch}' has no published weights; they come with the zoo "
                        "architectures (torchvision/<name>, timm/<name>, hf/<name>). Give a weight file or an "
                        "mltrain run instead")
    return published_weights(arch)


def published_normalization(cfg: Config) -> Statistics | None:
    """The normalisation the zoo's published weights were trained with, when they are the
    starting weights and `data.normalize` is auto; else None (the data's own statistics)."""
    from .models.zoo import published_statistics, zoo_of

    if getattr(cfg.data, "normalize", None) != "auto" or cfg.model.weights != PRETRAINED \
            or zoo_of(cfg.model.arch) is None:
        return None
    mean, std = published_statistics(cfg.model.arch)
    return Statistics(mean=tuple(mean), std=tuple(std))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file, a .pt/.pth file, or an mltrain run directory or
    checkpoint (its eval weights: the EMA where the run kept one)."""
    if not path.exists():
        raise UserError(f"model.weights: {path} does not exist; give a .safetensors or .pt/.pth file, an mltrain "
                        "run directory, or pretrained")
    return _run_weights(path) if path.is_dir() else read_weight_file(path)


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"model.weights: {path} is a safetensors file; pip install \"mltrain[safetensors]\"") \
                from None
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise UserError(f"model.weights: {path} is not a readable safetensors file ({error})") from None
    try:
        state = load_safely(path)
    except Unloadable as refused:
        if refused.code:
            raise UserError(f"model.weights: {path} names {refused.code}, which is neither a tensor nor plain data: "
                            "loading it could run code, so it is refused. Save a plain state dict "
                            "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
        raise UserError(f"model.weights: {path} is not a weight file torch can read (truncated, corrupt, or not "
                        "written by torch.save); give a .safetensors or .pt/.pth file") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:  # an mltrain checkpoint
        return _eval_weights(checked_checkpoint(state, path), path)
    return _state_dict_in(state, path)


def _run_weights(path: Path) -> dict[str, torch.Tensor]:
    """The eval weights of a run directory's best.pt (else last.pt)."""
    return _eval_weights(*load_checkpoint(path))


def _eval_weights(checkpoint: dict, found: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's eval weights: the EMA where the run kept one."""
    from .state_checks import averaged_weights

    averaged = averaged_weights(checkpoint, found)
    return _state_dict_in(averaged["weights"] if averaged is not None else checkpoint.get("model"), found)


def _state_dict_in(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping of a loaded file: itself, or nested under a usual key; the
    "module." prefix DataParallel adds is dropped."""
    if isinstance(state, dict):
        nested = next((state[key] for key in WRAPPERS if isinstance(state.get(key), dict)), None)
        if nested is not None and not any(isinstance(value, torch.Tensor) for value in state.values()):
            state = nested
    if not isinstance(state, dict) or not state or not all(
            isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()):
        raise UserError(f"model.weights: {path} is not a state dict (a mapping of names to tensors)")
    if all(name.startswith("module.") for name in state):
        state = {name.removeprefix("module."): value for name, value in state.items()}
    return state


def _load_fitting(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], dict, list[str]]:
    """Copy the tensors of `state` that fit `model`: (names kept, the model's tensors left fresh
    by name, names of `state` that match nothing in the model)."""
    own = model.state_dict(keep_vars=True)  # tied weights under each of their names
    parameters = dict(model.named_parameters())
    kept, new = [], {}
    with torch.no_grad():
        for name, target in own.items():
            source = state.get(name)
            if source is not None and source.shape != target.shape:
                source = _for_input_channels(source, target)
            fits = source is not None and source.shape == target.shape \
                and source.is_floating_point() == target.is_floating_point()
            if not fits:
                if name in parameters:
                    new[name] = target
                continue
            target.copy_(source)
            kept.append(name)
    unmatched = [name for name in state if name not in own]
    return kept, new, unmatched


def _for_input_channels(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """A first convolution's RGB kernel for another number of input channels, as timm adapts
    one: summed over RGB for one channel, else repeated and scaled to keep the activation's size."""
    if source.ndim != 4 or target.ndim != 4 or source.shape[1] != 3 or source.shape[0] != target.shape[0] \
            or source.shape[2:] != target.shape[2:]:
        return None
    channels = target.shape[1]
    if channels == 1:
        return source.sum(dim=1, keepdim=True)
    repeated = source.repeat(1, (channels + 2) // 3, 1, 1)[:, :channels]
    return repeated * (3 / channels)


def _names(names: Any) -> str:
    names = list(names)
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
