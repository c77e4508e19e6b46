"""The one way back from a checkpoint to a working model: eval, sample, resume and the final
test score all rebuild through here. The config, the data spec and the data encoding come from
the checkpoint, so the model is built without reading the dataset. Every state is checked against
what the config builds before any kernel touches it: a damaged or edited file gives a one-line
exit-2 message, never a crash inside an optimizer kernel."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .checkpoint import load_checkpoint, run_directory_of, spec_from_state, spec_state
from .config import Config, config_from_dict, get_key, updated
from .data import TARGET_SCALE, DataSpec, DataSplits, build_data
from .devices import pick_device
from .distributed import Distributed
from .errors import UserError
from .learner import Learner
from .optim import build_optimizer
from .schema import OptimizerSection
from .startup import start

# What --set may not change on resume: it would make the checkpoint describe another run, or
# not fit its optimizer state (a weight-decay change regroups the parameters).
FIXED_ON_RESUME = ("seed", "data", "model", "optimizer", "scheduler.name", "train.accumulate")

# Besides config, model and ema, what continuing a run reads.
_TRAINING_STATE = ("optimizer", "scaler", "scheduler", "monitor", "epoch_totals", "position", "step", "metrics",
                   "rng")

DAMAGED = "the file is damaged or was edited; use a checkpoint as `mltrain fit` wrote it"


@dataclass
class Restored:
    cfg: Config  # the checkpoint's config with the overrides (for scoring: no augmentation, fp32 off CUDA)
    checkpoint: dict  # in the current layout, whatever version wrote it
    path: Path  # the checkpoint file
    spec: DataSpec  # what the model reads and predicts
    data_state: dict  # the data encoding it was trained with (vocabulary, normalisation, classes...)
    learner: Learner  # on the device: the eval weights, or with resume=True the whole training state
    threads: int  # torch's CPU threads, as chosen
    _data: DataSplits | None = None  # already loaded to learn a version-1 checkpoint's spec

    @property
    def model(self) -> nn.Module:
        """The weights a checkpoint is scored with: its EMA where the run kept one."""
        return self.learner.eval_model

    @property
    def run_dir(self) -> Path | None:
        return run_directory_of(self.path)

    def data(self) -> DataSplits:
        """The configured dataset on the learner's device, encoded as the model was trained on it."""
        data = self._data or _encoded_data(self.cfg, self.learner.device, self.data_state, self.path)
        if spec_state(data.spec) != spec_state(self.spec):
            raise UserError(f"{self.path}: the data ({self.cfg.data.dataset}) now gives {_describe(data.spec)}, but "
                            f"the model was trained on {_describe(self.spec)}; point data.* at the data it was "
                            "trained on")
        return data


def restore(target: str | Path, prefer: tuple[str, ...] = ("best.pt", "last.pt"), device: str | None = None,
            overrides: list[str] | tuple[str, ...] = (), resume: bool = False) -> Restored:
    """Rebuild a run from a checkpoint (a run directory means the first of `prefer` in it).

    For scoring and generating (resume=False): the learner holds the eval weights (the EMA where
    the run kept one) on `device` (default: the best this machine has); augmentation is off and an
    fp16 run is scored in fp32 off CUDA. With resume=True it holds the whole training state
    (weights, optimizer, loss scaler, EMA, steps) on `device` (default: train.device), and
    `overrides` may not change FIXED_ON_RESUME."""
    checkpoint, path = load_checkpoint(target, prefer)
    for key in ("config", "model", "ema") + (_TRAINING_STATE if resume else ()):
        if key not in checkpoint:
            raise UserError(f"{path}: the checkpoint has no '{key}'; {DAMAGED}")
    if not isinstance(checkpoint["config"], dict) or not isinstance(checkpoint.get("data_state") or {}, dict):
        raise UserError(f"{path}: its config or data_state is not a mapping; {DAMAGED}")
    cfg = config_from_dict(checkpoint["config"], overrides, source=str(path))
    if resume:
        original = config_from_dict(checkpoint["config"], source=str(path))
        for key in FIXED_ON_RESUME:
            if get_key(cfg, key) != get_key(original, key):
                raise UserError(f"--set {key}: resuming cannot change {key} (the checkpoint was trained with "
                                f"{get_key(original, key)!r}); start a new run with `mltrain fit` instead")
    torch_device = pick_device(device or (cfg.train.device if resume else "auto"))
    job = Distributed.from_env() if resume else Distributed()
    torch_device = job.device_for(torch_device)
    if not resume:
        cfg = _for_scoring(cfg, torch_device)
    threads = start(cfg, torch_device, job.local_world_size)
    data_state = checkpoint.get("data_state") or {}
    data = None
    if checkpoint.get("spec") is None:  # format version 1 stored no spec: the data tells it
        data = _encoded_data(cfg, torch_device, data_state, path)
        spec = data.spec
    else:
        spec = spec_from_state(checkpoint["spec"], path)
    learner = Learner.build(cfg, spec, torch_device, training=resume, target_scale=data_state.get(TARGET_SCALE))
    if resume:
        load_training_state(learner, checkpoint, path, cfg.optimizer)
    else:
        load_eval_weights(learner, checkpoint, path)
    return Restored(cfg, checkpoint, path, spec, data_state, learner, threads, data)


def _encoded_data(cfg: Config, device: torch.device, data_state: dict, path: Path) -> DataSplits:
    """The data, encoded with the checkpoint's data_state (vocabulary, normalisation...), which
    the dataset's builder takes as keyword arguments."""
    if not data_state:
        return build_data(cfg.data, cfg.seed, device)
    with loading_state(path, "the data encoding (data_state)"):
        return build_data(cfg.data, cfg.seed, device, data_state)


def _for_scoring(cfg: Config, device: torch.device) -> Config:
    """Scoring sees the data as it is, in a precision this device has."""
    if cfg.train.precision == "fp16" and device.type != "cuda":
        cfg = updated(cfg, {"train.precision": "fp32"})
    return updated(cfg, {"data.augment": ()})


def load_eval_weights(learner: Learner, checkpoint: dict, path: Path) -> None:
    """The weights a checkpoint is scored with (its EMA where it has one) into the learner's
    eval model."""
    averaged = _averaged(checkpoint, path)
    weights = averaged["weights"] if averaged else checkpoint["model"]
    what = "the averaged (EMA) weights" if averaged else "the model weights"
    check_tensors(what, learner.eval_model.state_dict(), weights, path)
    learner.eval_model.load_state_dict(weights)


def load_training_state(learner: Learner, checkpoint: dict, path: Path, optimizer: OptimizerSection) -> None:
    """Weights, optimizer (as `optimizer` configures it), loss scaler, EMA and step count, each checked first."""
    check_tensors("the model weights", learner.model.state_dict(), checkpoint["model"], path)
    check_optimizer_state(learner, checkpoint["optimizer"], path, optimizer)
    averaged = _averaged(checkpoint, path)
    if learner.ema is not None and averaged:
        check_tensors("the averaged (EMA) weights", learner.ema.module.state_dict(), averaged["weights"], path)
    if not isinstance(checkpoint["scaler"], dict):
        raise UserError(f"{path}: the loss-scaler state is not a mapping; {DAMAGED}")
    step = checkpoint["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"{path}: step is {step!r}, not a whole number of 0 or more; {DAMAGED}")
    settings = [set(group) for group in learner.optimizer.param_groups]
    with loading_state(path, "the model, optimizer and loss-scaler state"):
        learner.load_state_dict(checkpoint)
    for built, group in zip(settings, learner.optimizer.param_groups):  # torch fills in settings it added since
        if built - set(group):
            raise UserError(f"{path}: the optimizer state has no setting {', '.join(sorted(built - set(group)))}; "
                            f"{DAMAGED}")


def _averaged(checkpoint: dict, path: Path) -> dict | None:
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
        built = build_optimizer(optimizer, probe)
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


def _describe(spec: DataSpec) -> str:
    return f"samples {tuple(spec.sample_shape)}" + (f" in {spec.num_classes} classes" if spec.num_classes else "")
