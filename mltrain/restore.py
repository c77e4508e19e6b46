"""The one way back from a checkpoint to a working model: eval, sample, resume and the final
test score all rebuild through here. The file is checked and its config, data spec and data
encoding rebuild the learner without reading the dataset; a resumed run then hands the file to
`state.TrainState`, which loads the training state. Every state is checked against what the
config builds before any kernel touches it (`state_checks`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .build import build_learner
from .checkpoint import load_checkpoint, run_directory_of, spec_from_state, spec_state
from .config import Config, config_from_dict, get_key, updated
from .data import TARGET_SCALE, DataSpec, DataSplits, build_data, checked_state
from .devices import pick_device
from .distributed import Distributed
from .errors import UserError
from .registry import DATASETS, from_stored
from .data.stream import drops_last
from .learner import Learner, compile_mode
from .losses import build_loss
from .models import build_model, built_from
from .startup import start
from .state_checks import DAMAGED, averaged_weights, check_tensors, loading_state

# What --set may not change on resume: it would make the checkpoint describe another run, or
# not fit its optimizer state (a weight-decay change regroups the parameters).
FIXED_ON_RESUME = ("seed", "data", "model", "optimizer", "scheduler.name", "train.accumulate")

SPARE_VALUES = 1 << 24  # values (64 MiB of float32) a spec may ask beyond twice its weights before it is refused

# Besides config, model and ema, what continuing a run reads.
_TRAINING_STATE = ("optimizer", "scaler", "scheduler", "monitor", "epoch_totals", "position", "metrics", "rng")


@dataclass
class Restored:
    cfg: Config  # the checkpoint's config with the overrides (for scoring: no augmentation, fp32 off CUDA)
    checkpoint: dict  # in the current layout, whatever version wrote it
    path: Path  # the checkpoint file
    spec: DataSpec  # what the model reads and predicts
    data_state: dict  # the data encoding it was trained with (vocabulary, normalisation, classes...)
    learner: Learner  # on the device: the eval weights; with resume=True as built, for the training state
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
    fp16 run is scored in fp32 off CUDA. With resume=True it is built to train, on `device`
    (default: train.device), for `state.TrainState` to load the checkpoint's training state into;
    `overrides` may not change FIXED_ON_RESUME."""
    checkpoint, path = load_checkpoint(target, prefer)
    for key in ("config", "model", "ema") + (_TRAINING_STATE if resume else ()):
        if key not in checkpoint:
            raise UserError(f"{path}: the checkpoint has no '{key}'; {DAMAGED}")
    if checkpoint.get("sharded") and not resume:
        best = path.parent.parent / "best.pt"
        instead = f"score, export or sample {best} (one file of whole weights)" if best.is_file() else \
            "the run has no best.pt yet (it stopped before its first validation)"
        raise UserError(f"{path}: the training state of an fsdp run, in shards beside it; {instead}, or continue "
                        "the run with `mltrain fit --resume`")
    if not isinstance(checkpoint["config"], dict) or not isinstance(checkpoint.get("data_state") or {}, dict):
        raise UserError(f"{path}: its config or data_state is not a mapping; {DAMAGED}")
    with from_stored(), built_from(checkpoint.get("model_files")):
        cfg = config_from_dict(checkpoint["config"], overrides, source=str(path))
        original = config_from_dict(checkpoint["config"], source=str(path)) if resume else cfg
    if resume:
        for key in FIXED_ON_RESUME:
            if get_key(cfg, key) != get_key(original, key):
                raise UserError(f"--set {key}: resuming cannot change {key} (the checkpoint was trained with "
                                f"{get_key(original, key)!r}); start a new run with `mltrain fit` instead")
        if _drops_last(cfg) != _drops_last(original):
            raise UserError(f"--set train.compile: {cfg.train.compile!r} would {'drop' if _drops_last(cfg) else 'keep'} "
                            f"the last partial batch of each epoch (data.drop_last {cfg.data.drop_last}), which the "
                            f"run, compiled with {original.train.compile!r}, did not: its epochs would change length. "
                            "Resume with a compile mode of the same kind, or set data.drop_last in a new run")
    torch_device = pick_device(device or (cfg.train.device if resume else "auto"))
    job = Distributed.from_env() if resume else Distributed()
    torch_device = job.device_for(torch_device)
    if not resume:
        cfg = _for_scoring(cfg, torch_device)
    threads = start(cfg, torch_device, job.local_world_size)
    data_state = _checked_data_state(cfg, checkpoint.get("data_state") or {}, path)
    data = None
    if checkpoint.get("spec") is None:  # format version 1 stored no spec: the data tells it
        data = _encoded_data(cfg, torch_device, data_state, path)
        spec = data.spec
    else:
        spec = spec_from_state(checkpoint["spec"], path)
    with built_from(checkpoint.get("model_files")):
        _refuse_a_model_beyond_its_weights(cfg, spec, data_state, _stored_values(checkpoint, path), path)
        learner = build_learner(cfg, spec, torch_device, training=resume, target_scale=data_state.get(TARGET_SCALE),
                                backbone=_stored_backbone(checkpoint, path))
    if not resume:
        load_eval_weights(learner, checkpoint, path)
    return Restored(cfg, checkpoint, path, spec, data_state, learner, threads, data)


def _drops_last(cfg: Config) -> bool:
    return drops_last(cfg.data.drop_last, compile_mode(cfg.train.compile))


def _stored_backbone(checkpoint: dict, path: Path) -> list[str]:
    """The parameters the run's starting weights set (none in a checkpoint from before them):
    the checkpoint holds the weights, so `model.weights` is never read again."""
    backbone = checkpoint.get("backbone", [])
    if not isinstance(backbone, list) or not all(isinstance(name, str) for name in backbone):
        raise UserError(f"{path}: its backbone is not a list of parameter names; {DAMAGED}")
    return backbone


def _checked_data_state(cfg: Config, state: dict, path: Path) -> dict:
    """The stored data encoding, held to what its dataset's builder declares (its names and
    types), before eval, predict or sample reads any of it."""
    source_state = {name: value for name, value in state.items() if name != TARGET_SCALE}
    with loading_state(path, "the data encoding (data_state)"):
        checked = checked_state(DATASETS[cfg.data.dataset], source_state)
    return {**state, **checked}


def _stored_values(checkpoint: dict, path: Path) -> int | None:
    """How many values the checkpoint's weights hold (from the shards' metadata for an fsdp run's
    training state); None when they are not a mapping (the tensor check names that)."""
    if checkpoint.get("sharded"):
        from .sharded_checkpoint import stored_values

        return stored_values(path.parent)
    weights = checkpoint["model"]
    if not isinstance(weights, dict):
        return None
    return sum(tensor.numel() for tensor in weights.values() if isinstance(tensor, torch.Tensor))


def _refuse_a_model_beyond_its_weights(cfg: Config, spec: DataSpec, data_state: dict, stored: int | None,
                                       path: Path) -> None:
    """Build the model without memory first (on the meta device) and count its values: a stored
    spec edited to ask for a far larger model than the file's weights would otherwise be allocated
    before the weights are compared with it. A small difference is left to the tensor check,
    which names the entry."""
    if stored is None:
        return
    try:
        with torch.device("meta"):
            criterion = build_loss(cfg.model.head, spec, cfg.train.label_smoothing, data_state.get(TARGET_SCALE))
            built = sum(tensor.numel() for tensor in build_model(cfg.model, spec, criterion.num_outputs)
                        .state_dict().values())
    except Exception:  # noqa: BLE001 - a model that cannot be built without memory is compared after it is built
        return
    if built > 2 * stored + SPARE_VALUES:
        raise UserError(f"{path}: its data spec and config build a model of {built:,} values, but its weights hold "
                        f"{stored:,}; {DAMAGED}")


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
    averaged = averaged_weights(checkpoint, path)
    weights = averaged["weights"] if averaged else checkpoint["model"]
    what = "the averaged (EMA) weights" if averaged else "the model weights"
    check_tensors(what, learner.eval_model.state_dict(), weights, path)
    learner.eval_model.load_state_dict(weights)


def load_eval_weights_from(learner: Learner, target: Path) -> None:
    """`load_eval_weights` from the checkpoint file at `target` (best.pt for the test score)."""
    checkpoint, path = load_checkpoint(target)
    load_eval_weights(learner, checkpoint, path)


def _describe(spec: DataSpec) -> str:
    return f"samples {tuple(spec.sample_shape)}" + (f" in {spec.num_classes} classes" if spec.num_classes else "")
