"""YAML -> a frozen, typed Config, with every default declared once, here.

Loading fails early and precisely: unknown keys (with the closest valid key), wrong types,
out-of-range values, unknown component names and impossible pairings are reported with the
dotted key and its file:line (or the --set that gave it) before any data is read.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, UserError
from .registry import (
    ACTIVATIONS, ARCHITECTURES, AUGMENTATIONS, CLASSIFICATION, DATASETS, HEADS, OPTIMIZERS, REGRESSION, SCHEDULERS,
    TASKS, Registry,
    did_you_mean,
)


@dataclass(frozen=True)
class AugmentConfig:
    name: str = ""  # a name from `mltrain list augmentations` (required)
    padding: int = 4  # crop: pixels of zero padding on each side before cropping back to size
    pixels: int = 2  # translate: largest shift along each axis, in pixels
    degrees: float = 10.0  # rotate: largest rotation either way, in degrees
    size: int = 8  # cutout: side of the zeroed square, in pixels
    std: float = 0.05  # noise: std of the Gaussian noise, in units of the normalised input


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # a name from `mltrain list datasets`
    batch_size: int = 64  # samples per optimizer step
    val_split: float = 0.1  # fraction of train held out (seeded) when the dataset has no val split
    test_split: float = 0.2  # image_folder, csv, npz: fraction held out as test (fixed seed) without a test split
    limit: int | None = None  # train on the first N training samples only (quick runs); null: all
    classes: int = 3  # spirals: number of arms, one class each
    points: int = 500  # spirals: points per arm
    noise: float = 0.05  # spirals: std of the Gaussian noise on each coordinate (outer radius is 1)
    length: int = 16  # parity, adding, sorting: steps per sequence
    samples: int = 4000  # parity, adding, sorting: sequences generated in all (train + val + test)
    vocab_size: int = 10  # sorting: distinct digits (one-hot features; classes per position)
    path: str | None = None  # text: the data file; relative paths are read from the config file's directory
    block_size: int = 64  # text: characters per sample, the language model's context length
    windows: int = 2000  # text: training windows per epoch, at evenly spaced offsets over the train text
    root: str = "data"  # torchvision sets, image_folder: the data directory; relative: to the config file's
    #                     directory when written there, else to the working directory
    download: bool = False  # torchvision sets: download the files into root when they are missing
    image_size: int = 32  # image_folder: side of the square every image is resized to, in pixels
    max_memory_mb: int = 4096  # image_folder: largest decoded set (uint8, all splits) kept in memory, in MiB;
    #                            larger sets stream from disk (0: always stream)
    workers: int = 2  # image_folder streamed from disk: DataLoader worker processes decoding images
    augment: tuple[AugmentConfig, ...] = ()  # image sets: training-batch augmentations in order,
    #                                          e.g. [{name: crop, padding: 4}, {name: flip}]; never in eval
    target: str | None = None  # csv: the column to predict
    features: tuple[str, ...] | None = None  # csv: the input columns; null: every column but the target
    task: Literal["auto", "classification", "regression"] = "auto"  # csv, npz: what the targets are;
    #                                                                 auto: from model.head (linear: regression)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "mlp"  # a name from `mltrain list architectures`
    head: str = "softmax"  # softmax (multi-class) | sigmoid (binary / one-vs-rest) | linear (regression)
    hidden: tuple[int, ...] = (128,)  # mlp: width of each hidden layer
    activation: str = "auto"  # a name from `mltrain list activations`; auto: gelu for transformer and gpt, else relu
    norm: Literal["none", "batch", "layer", "group"] = "none"  # mlp, cnn: after each hidden layer or conv
    dropout: float = 0.0  # probability of zeroing a hidden unit while training
    d_model: int = 128  # transformer, gpt: width of the token vectors (a multiple of heads)
    heads: int = 4  # transformer, gpt: attention heads per block
    layers: int = 2  # stacked layers (recurrent) or blocks (transformer, gpt)
    channels: tuple[int, ...] = (32, 64)  # cnn: output channels of each conv block
    kernel_size: int = 3  # cnn: side of each conv kernel, in steps or pixels
    stride: int = 1  # cnn: step of each conv, in steps or pixels
    padding: int | None = None  # cnn: zeros added on each side; null: kernel_size // 2 (size kept at stride 1)
    pool: Literal["max", "avg", "none"] = "max"  # cnn: 2x down-sampling after each conv block (sides of 1 kept)
    small_input: bool | None = None  # resnet: 3x3 stride-1 stem, no max-pool; null: for images of side <= 32
    hidden_size: int = 128  # rnn, lstm, gru: width of the recurrent state, per direction
    bidirectional: bool = False  # rnn, lstm, gru: also read each sequence backwards
    readout: Literal["last", "mean"] = "last"  # rnn, lstm, gru: final state, or mean of the outputs over steps
    mlp_ratio: float = 4.0  # transformer, gpt: width of each block's MLP, as a multiple of d_model
    patch_size: int = 0  # transformer on images: side of the square patches, one step each; 0: rows as steps
    positions: Literal["learned", "sinusoidal"] = "learned"  # transformer: how step positions are encoded
    pooling: Literal["cls", "mean"] = "cls"  # transformer: a class token's output, or the mean over steps


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # a name from `mltrain list optimizers`
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # L2 (sgd, adam, rmsprop) or decoupled (adamw); never on biases or norms
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = False  # sgd: Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw: decay rates of the moment estimates
    eps: float = 1e-8  # adam, adamw, rmsprop: added to the denominator for stability


@dataclass(frozen=True)
class SchedulerConfig:
    name: str = "constant"  # a name from `mltrain list schedulers`
    warmup_steps: int = 0  # optimizer steps of linear warmup from lr/warmup_steps to lr
    min_lr: float = 0.0  # cosine: the lr reached at the last step
    step_size: int = 1000  # step: optimizer steps between drops
    milestones: tuple[int, ...] = (1000,)  # multistep: optimizer steps (after warmup) at which the lr drops
    gamma: float = 0.1  # step, multistep, plateau: lr multiplier at each drop
    decay: float = 0.999  # exponential: lr multiplier per optimizer step
    pct_start: float = 0.3  # onecycle: fraction of the steps spent rising to lr
    patience: int = 2  # plateau: validations without improvement of train.monitor before a drop


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int = 5  # validations (one per epoch unless train.val_every_steps) without improvement
    min_delta: float = 0.0  # smallest change of the monitored metric that counts as improvement


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training split
    monitor: str = "auto"  # picks best.pt and drives early stopping; auto: val/accuracy, or val/loss for a linear head
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast on CPU or CUDA; fp16: CUDA only
    early_stopping: EarlyStoppingConfig | None = None  # null: train for all epochs
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    threads: int | None = None  # CPU threads for torch; null: one per core, minus one on 2+ cores
    log_every_steps: int = 50  # optimizer steps between progress/loss updates (each one a host sync)
    max_steps: int | None = None  # stop after this many optimizer steps; null: train.epochs decides
    checkpoint_every_steps: int | None = None  # also write last.pt every N steps (mid-epoch resume); null: per epoch
    val_every_steps: int | None = None  # also validate every N optimizer steps; null: once per epoch
    monitor_mode: Literal["auto", "min", "max"] = "auto"  # auto: max for accuracy, min for losses
    grad_clip: float | None = None  # clip the global gradient norm to this; null: no clipping
    accumulate: int = 1  # micro-batches of data.batch_size summed into one optimizer step
    label_smoothing: float = 0.0  # softmax head: weight moved from the true class to all classes
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.999;
    #                           validation, best.pt and eval then use the averaged weights
    compile: bool = False  # torch.compile the model (checkpoints keep plain weight names)
    deterministic: bool = False  # deterministic algorithms only (slower on CUDA; CPU runs are already reproducible)


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs"  # parent of the run directories
    loggers: tuple[Literal["tensorboard", "mlflow"], ...] = ()  # also log to these; the run directory is always written
    mlflow_uri: str | None = None  # mlflow tracking URI; null: MLFLOW_TRACKING_URI, else MLflow's own default
    mlflow_log_model: bool = False  # mlflow: also upload checkpoints/best.pt as an artifact


@dataclass(frozen=True)
class Config:
    name: str = ""  # run name; default: the config file's stem
    seed: int = 0  # seeds every RNG: weights, data order, splits
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# Sections whose extra keys belong to the component picked by one of their keys.
_SELECTORS: dict[str, tuple[str, Registry]] = {
    "data": ("dataset", DATASETS),
    "model": ("arch", ARCHITECTURES),
    "optimizer": ("name", OPTIMIZERS),
    "scheduler": ("name", SCHEDULERS),
    "data.augment": ("name", AUGMENTATIONS),
}


def _component_keys(section: str) -> set[str]:
    """Keys of a section that only some components take."""
    _, registry = _SELECTORS[section]
    return {param for entry in registry for param in entry.params}


def _takes(section: str, key: str, cfg_section: Any) -> bool:
    """Whether the selected component of a section uses this key (common keys always do)."""
    if section not in _SELECTORS or key not in _component_keys(section):
        return True
    selector, registry = _SELECTORS[section]
    return key in registry[getattr(cfg_section, selector)].params


# --- YAML with line numbers ---------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 3e-4 as a float, as YAML 1.2 does (YAML 1.1 wants 3.0e-4)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class _Locations:
    """Where each dotted key was written: 'file:line', or '--set key=value'."""

    def __init__(self, source: str):
        self.source = source
        self.places: dict[str, str] = {}

    def of(self, key: str) -> str:
        while key:
            if key in self.places:
                return self.places[key]
            key = key.rpartition(".")[0]
        return self.source


def _yaml_error(path: str, error: yaml.YAMLError) -> ConfigError:
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else path
    problem = getattr(error, "problem", None) or str(error)
    return ConfigError(where, "", f"invalid YAML: {problem}; check the indentation and quoting there")


def _record_lines(node: yaml.Node, prefix: str, path: str, locations: _Locations) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        where = f"{path}:{key_node.start_mark.line + 1}"
        if key in seen:
            raise ConfigError(where, key, "written twice in the same mapping; keep one")
        seen.add(key)
        locations.places[key] = where
        _record_lines(value_node, f"{key}.", path, locations)


def _parse_yaml(text: str, path: str, locations: _Locations) -> Any:
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            _record_lines(node, "", path, locations)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise _yaml_error(path, error) from None


def parse_value(text: str) -> Any:
    """A YAML scalar or flow value, as --set takes it: `0.01`, `[256, 128]`, `null`, `adamw`."""
    try:
        return yaml.load(text, Loader=_Loader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _apply_overrides(raw: dict, overrides: list[str], locations: _Locations) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", item, "expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=0.01")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parse_value(text)
        locations.places[key] = f"--set {item}"


# --- typed construction -------------------------------------------------------------------

def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None)) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        if typing.get_origin(args[0]) is Literal:
            return "a list of names from: " + ", ".join(map(str, typing.get_args(args[0])))
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]


def _coerce(value: Any, hint: Any, key: str, locations: _Locations) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key, locations)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value, f"{key}.", locations)
    if origin is Literal:
        if value in args:
            return value
        hint_text = did_you_mean(str(value), list(args))
        raise ConfigError(locations.of(key), key, f"'{value}' is not valid; {hint_text}choose from: {', '.join(args)}")
    if origin is tuple:
        items = value if isinstance(value, list) else [value]
        item_hint = args[0]
        if not (len(args) == 2 and args[1] is Ellipsis) and len(items) != len(args):
            raise ConfigError(locations.of(key), key, f"expected {_describe(hint)}, got {value!r}")
        if dataclasses.is_dataclass(item_hint):  # each item reports its own precise error
            return tuple(_coerce(item, item_hint, key, locations) for item in items)
        try:
            return tuple(_coerce(item, item_hint, key, locations) for item in items)
        except ConfigError:
            raise ConfigError(locations.of(key), key, f"expected {_describe(hint)}, got {value!r}") from None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(locations.of(key), key, f"expected {_describe(hint)}, got {value!r}")


def _build(cls: type, raw: Any, prefix: str, locations: _Locations) -> Any:
    section = prefix.rstrip(".")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(locations.of(section), section or "config", f"expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in valid:
            where = f" in {section}" if section else ""
            raise ConfigError(locations.of(dotted), dotted,
                              f"unknown key{where}; {did_you_mean(str(key), valid)}valid keys: {', '.join(valid)}")
        values[key] = _coerce(value, hints[key], dotted, locations)
    built = cls(**values)
    if section in _SELECTORS:
        selector, registry = _SELECTORS[section]
        name = getattr(built, selector)
        if name not in registry:
            raise ConfigError(locations.of(f"{section}.{selector}"), f"{section}.{selector}",
                              registry.unknown_message(name))
        for key in raw:
            if not _takes(section, key, built):
                takes = ", ".join(registry[name].params) or "none"
                raise ConfigError(locations.of(f"{prefix}{key}"), f"{prefix}{key}",
                                  f"{registry.kind} '{name}' does not take this key "
                                  f"(its own keys: {takes}); remove it or pick another {registry.kind}")
    return built


# --- rules that span keys -----------------------------------------------------------------

_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "seed": (lambda v: v >= 0, "must be 0 or more"),
    "data.batch_size": (lambda v: v >= 1, "must be at least 1"),
    "data.val_split": (lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1"),
    "data.classes": (lambda v: v >= 2, "must be at least 2"),
    "data.points": (lambda v: v >= 2, "must be at least 2"),
    "data.noise": (lambda v: v >= 0.0, "must be 0 or more"),
    "data.length": (lambda v: v >= 2, "must be at least 2"),
    "data.samples": (lambda v: v >= 10, "must be at least 10"),
    "data.vocab_size": (lambda v: v >= 2, "must be at least 2"),
    "data.block_size": (lambda v: v >= 1, "must be at least 1"),
    "data.windows": (lambda v: v >= 1, "must be at least 1"),
    "data.test_split": (lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1"),
    "data.limit": (lambda v: v is None or v >= 1, "must be at least 1, or null for all"),
    "data.image_size": (lambda v: v >= 1, "must be at least 1"),
    "data.max_memory_mb": (lambda v: v >= 0, "must be 0 or more"),
    "data.workers": (lambda v: v >= 0, "must be 0 or more"),
    "model.hidden": (lambda v: all(width >= 1 for width in v), "every width must be at least 1"),
    "model.dropout": (lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1"),
    "model.d_model": (lambda v: v >= 1, "must be at least 1"),
    "model.heads": (lambda v: v >= 1, "must be at least 1"),
    "model.layers": (lambda v: v >= 1, "must be at least 1"),
    "model.channels": (lambda v: all(width >= 1 for width in v), "every width must be at least 1"),
    "model.kernel_size": (lambda v: v >= 1, "must be at least 1"),
    "model.stride": (lambda v: v >= 1, "must be at least 1"),
    "model.padding": (lambda v: v is None or v >= 0, "must be 0 or more, or null for kernel_size // 2"),
    "model.hidden_size": (lambda v: v >= 1, "must be at least 1"),
    "model.mlp_ratio": (lambda v: v > 0.0, "must be above 0"),
    "model.patch_size": (lambda v: v >= 0, "must be 0 (image rows as steps) or more"),
    "optimizer.lr": (lambda v: v > 0.0, "must be above 0"),
    "optimizer.weight_decay": (lambda v: v >= 0.0, "must be 0 or more"),
    "optimizer.momentum": (lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1"),
    "optimizer.betas": (lambda v: all(0.0 <= b < 1.0 for b in v), "each must be at least 0 and below 1"),
    "optimizer.eps": (lambda v: v > 0.0, "must be above 0"),
    "scheduler.warmup_steps": (lambda v: v >= 0, "must be 0 or more"),
    "scheduler.min_lr": (lambda v: v >= 0.0, "must be 0 or more"),
    "train.epochs": (lambda v: v >= 1, "must be at least 1"),
    "train.threads": (lambda v: v is None or v >= 1, "must be at least 1, or null for automatic"),
    "train.log_every_steps": (lambda v: v >= 1, "must be at least 1"),
    "train.max_steps": (lambda v: v is None or v >= 1, "must be at least 1, or null"),
    "train.checkpoint_every_steps": (lambda v: v is None or v >= 1, "must be at least 1, or null"),
    "train.val_every_steps": (lambda v: v is None or v >= 1, "must be at least 1, or null"),
    "train.grad_clip": (lambda v: v is None or v > 0.0, "must be above 0, or null"),
    "train.accumulate": (lambda v: v >= 1, "must be at least 1"),
    "train.label_smoothing": (lambda v: 0.0 <= v < 1.0, "must be at least 0 and below 1"),
    "train.ema": (lambda v: v is None or 0.0 < v < 1.0, "must be above 0 and below 1, or null"),
    "scheduler.step_size": (lambda v: v >= 1, "must be at least 1"),
    "scheduler.milestones": (lambda v: list(v) == sorted(set(v)) and all(m >= 1 for m in v),
                             "must be increasing step numbers of at least 1"),
    "scheduler.gamma": (lambda v: 0.0 < v < 1.0, "must be above 0 and below 1"),
    "scheduler.decay": (lambda v: 0.0 < v <= 1.0, "must be above 0 and at most 1"),
    "scheduler.pct_start": (lambda v: 0.0 < v < 1.0, "must be above 0 and below 1"),
    "scheduler.patience": (lambda v: v >= 0, "must be 0 or more"),
    "train.early_stopping.patience": (lambda v: v >= 1, "must be at least 1"),
    "train.early_stopping.min_delta": (lambda v: v >= 0.0, "must be 0 or more"),
}
_AUGMENT_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "padding": (lambda v: v >= 1, "must be at least 1"),
    "pixels": (lambda v: v >= 1, "must be at least 1"),
    "degrees": (lambda v: 0.0 < v <= 180.0, "must be above 0 and at most 180"),
    "size": (lambda v: v >= 1, "must be at least 1"),
    "std": (lambda v: v > 0.0, "must be above 0"),
}


def get_key(cfg: Config, dotted: str) -> Any:
    """The value at a dotted key (None under an unset optional section)."""
    value: Any = cfg
    for part in dotted.split("."):
        if value is None:
            return None
        value = getattr(value, part)
    return value


def monitor_choices(head: str, has_val: bool) -> list[str]:
    """Metrics train.monitor may name, the one `auto` picks last."""
    metrics = ["loss"] + (["accuracy"] if CLASSIFICATION in HEADS[head].tags else [])
    splits = ("train", "val") if has_val else ("train",)
    return [f"{split}/{metric}" for split in splits for metric in metrics]


_GELU_ARCHS = ("transformer", "gpt")  # the activation their papers use; `auto` picks it


def _validate(cfg: Config, locations: _Locations) -> Config:
    if "/" in cfg.name or "\\" in cfg.name or cfg.name in (".", ".."):
        raise ConfigError(locations.of("name"), "name", f"{cfg.name!r} must be a plain name (no / or \\), "
                          "it names the run directory; use output.dir to choose where runs go")
    if cfg.model.activation == "auto":
        chosen = "gelu" if cfg.model.arch in _GELU_ARCHS else "relu"
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, activation=chosen))
    for key, (ok, rule) in _RANGES.items():
        value = get_key(cfg, key)
        if value is not None and not ok(value):
            raise ConfigError(locations.of(key), key, f"{value!r} {rule}")
    for augmentation in cfg.data.augment:
        for key in AUGMENTATIONS[augmentation.name].params:
            ok, rule = _AUGMENT_RANGES[key]
            if not ok(getattr(augmentation, key)):
                raise ConfigError(locations.of("data.augment"), f"data.augment.{key}",
                                  f"{getattr(augmentation, key)!r} {rule} ({augmentation.name})")
    for key, registry in (("model.activation", ACTIVATIONS), ("model.head", HEADS)):
        value = get_key(cfg, key)
        if value not in registry:
            raise ConfigError(locations.of(key), key, registry.unknown_message(value))
    dataset, arch, head = DATASETS[cfg.data.dataset], ARCHITECTURES[cfg.model.arch], HEADS[cfg.model.head]
    if not dataset.tags & arch.tags:
        fitting = [a.name for a in ARCHITECTURES if a.tags & dataset.tags]
        raise ConfigError(locations.of("model.arch"), "model.arch",
                          f"arch '{arch.name}' cannot read dataset '{dataset.name}' "
                          f"(samples: {', '.join(sorted(dataset.tags - TASKS))}); "
                          f"architectures that fit: {', '.join(fitting)}")
    if not dataset.tags & head.tags:
        fitting = [h.name for h in HEADS if h.tags & dataset.tags]
        raise ConfigError(locations.of("model.head"), "model.head",
                          f"head '{head.name}' does {', '.join(sorted(head.tags))}, but dataset "
                          f"'{dataset.name}' does not; heads that fit: {', '.join(fitting)}")
    if "path" in dataset.params and cfg.data.path is None:
        raise ConfigError(locations.of("data"), "data.path",
                          f"dataset '{dataset.name}' reads a file: set data.path to it")
    if "target" in dataset.params and cfg.data.target is None:
        raise ConfigError(locations.of("data"), "data.target",
                          f"dataset '{dataset.name}' predicts one column: set data.target to its name")
    if "task" in dataset.params:
        head_task = CLASSIFICATION if CLASSIFICATION in head.tags else REGRESSION
        if cfg.data.task == "auto":
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, task=head_task))
        elif cfg.data.task != head_task:
            raise ConfigError(locations.of("data.task"), "data.task",
                              f"'{cfg.data.task}' does not match head '{head.name}', which does {head_task}; "
                              "set data.task: auto, or pick a head for the task")
    if "heads" in arch.params and cfg.model.d_model % cfg.model.heads:
        raise ConfigError(locations.of("model.heads"), "model.heads",
                          f"{cfg.model.heads} heads do not divide model.d_model {cfg.model.d_model}; "
                          "each head takes an equal share of d_model")
    if cfg.train.label_smoothing and cfg.model.head != "softmax":
        raise ConfigError(locations.of("train.label_smoothing"), "train.label_smoothing",
                          f"label smoothing applies to the softmax head only (head here: {cfg.model.head}); "
                          "set it to 0 or use head: softmax")
    choices = monitor_choices(cfg.model.head, has_val=cfg.data.val_split > 0)
    if cfg.train.monitor == "auto":
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, monitor=choices[-1]))
    elif cfg.train.monitor not in choices:
        raise ConfigError(locations.of("train.monitor"), "train.monitor",
                          f"'{cfg.train.monitor}' is not reported with head '{cfg.model.head}'; "
                          f"{did_you_mean(cfg.train.monitor, choices)}choose from: auto, {', '.join(choices)}")
    return cfg


# --- public API ---------------------------------------------------------------------------

def _resolve_data_paths(cfg: Config, config_dir: Path, locations: _Locations) -> Config:
    """data.path and data.root written in a config file are relative to that file's directory; from
    --set or a default, to the working directory. The resolved config holds them absolute, so a saved
    config reads the same files from anywhere."""
    resolved = {}
    for key in ("path", "root"):
        value = getattr(cfg.data, key)
        if key not in DATASETS[cfg.data.dataset].params or value is None or Path(value).is_absolute():
            continue
        written_at = locations.places.get(f"data.{key}", "--set")
        base = Path.cwd() if written_at.startswith("--set") else config_dir
        resolved[key] = str((base / value).resolve())
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **resolved)) if resolved else cfg


def _from_raw(raw: Any, overrides: list[str], locations: _Locations, default_name: str,
              config_dir: Path) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(locations.source, "",
                          f"a config is a mapping of sections (data, model, ...), got {type(raw).__name__}")
    _apply_overrides(raw, list(overrides), locations)
    cfg = _build(Config, raw, "", locations)
    if not cfg.name:
        cfg = dataclasses.replace(cfg, name=default_name)
    return _validate(_resolve_data_paths(cfg, config_dir, locations), locations)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config file, apply --set overrides, fill defaults and validate."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read config file {path}: {error}") from None
    locations = _Locations(str(path))
    raw = _parse_yaml(text, str(path), locations)
    return _from_raw(raw, overrides, locations, default_name=path.stem, config_dir=path.parent)


def config_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "checkpoint") -> Config:
    """Rebuild a Config from its dumped form (as stored in a checkpoint), with overrides."""
    import copy

    return _from_raw(copy.deepcopy(raw), overrides, _Locations(source), default_name="run", config_dir=Path.cwd())


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain data: every key that applies, defaults filled in."""
    def convert(section: str, obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: convert(f"{section}.{f.name}".lstrip("."), getattr(obj, f.name))
                    for f in dataclasses.fields(obj) if _takes(section, f.name, obj)}
        if isinstance(obj, tuple):
            return [convert(section, item) for item in obj]
        return obj

    return convert("", cfg)


class _Dumper(yaml.SafeDumper):
    """Block-style mappings with lists kept on one line: `hidden: [128, 64]`."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def dump_config(cfg: Config) -> str:
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
