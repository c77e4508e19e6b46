"""YAML -> a frozen, typed Config. The run-level keys (name, seed, train, output) are declared
here; each of data, model, optimizer and scheduler is validated against the schema of the
component it names (`dataset`, `arch`, `name`), declared next to that component's code.

Loading fails early and precisely: unknown keys (with the closest valid key), wrong types,
out-of-range values, unknown component names and impossible pairings are reported with the
dotted key and its file:line (or the --set that gave it), every problem of a file at once,
before any data is read.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError

from .errors import ConfigError, UserError
from .registry import (
    ARCHITECTURES, AUGMENTATIONS, CLASSIFICATION, DATASETS, HEADS, OPTIMIZERS, REGISTRIES, REGRESSION, SCHEDULERS,
    TASKS, Registry, did_you_mean, rebuilding_stored,
)
from .schema import (
    DataSection, Fraction, ModelSection, NonNegativeFloat, OptimizerSection, PositiveFloat, PositiveInt,
    SchedulerSection, Section,
)
from .parameter_sets import ROLES
from .yaml_source import Locations, apply_overrides, parse_yaml, parse_value, read_config_text

__all__ = ["Config", "TrainConfig", "OutputConfig", "EarlyStoppingConfig", "load_config", "config_from_dict",
           "config_to_dict", "dump_config", "get_key", "parse_value", "section_config", "stored_config", "updated"]

class EarlyStoppingConfig(Section):
    patience: PositiveInt = 5
    """validations (one per epoch unless train.val_every_steps) without improvement"""
    min_delta: NonNegativeFloat = 0.0
    """smallest change of the monitored metric that counts as improvement"""


class FSDPConfig(Section):
    wrap: tuple[str, ...] = ()
    """class names of the modules sharded as units (besides the root); empty: the blocks of the built-in families"""
    reshard_after_forward: bool = True
    """free each unit's gathered weights after its forward (gathered again for backward): less memory, more traffic"""


class TrainConfig(Section):
    epochs: PositiveInt = 10
    """passes over the training split"""
    monitor: str = "auto"
    """picks best.pt and drives early stopping; auto: val/loss (train/loss without a val split)"""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """bf16: autocast on CPU or CUDA; fp16: CUDA only"""
    early_stopping: EarlyStoppingConfig | None = None
    """null: train for all epochs"""
    device: str = "auto"
    """auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps"""
    threads: PositiveInt | None = None
    """CPU threads for torch (per process); null: the cores other processes leave free (every core when idle)"""
    log_every_steps: PositiveInt = 50
    """optimizer steps between metrics.jsonl step records (each one a host sync)"""
    max_steps: PositiveInt | None = None
    """stop after this many optimizer steps; null: train.epochs decides"""
    checkpoint_every_steps: PositiveInt | None = None
    """also write last.pt every N steps (mid-epoch resume); null: per epoch"""
    val_every_steps: PositiveInt | None = None
    """also validate every N optimizer steps; null: once per epoch"""
    monitor_mode: Literal["auto", "min", "max"] = "auto"
    """auto: max for accuracy, min for losses"""
    grad_clip: PositiveFloat | None = None
    """clip the global gradient norm to this; null: no clipping"""
    accumulate: PositiveInt = 1
    """micro-batches of data.batch_size summed into one optimizer step"""
    label_smoothing: Fraction = 0.0
    """softmax head: weight moved from the true class to all classes"""
    ema: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None
    """decay of an exponential moving average of the weights, e.g. 0.999; validation, best.pt and eval use it"""
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = False
    """torch.compile the training step (forward, loss and backward) in this mode; true: default; reduce-overhead: CUDA graphs on a GPU, for small models (see data.drop_last); checkpoints keep plain weight names"""
    deterministic: bool = False
    """deterministic algorithms only (slower on CUDA; CPU runs are already reproducible)"""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """with several processes: ddp (a whole copy each) or fsdp (weights, gradients and optimizer state sharded); auto: ddp"""
    fsdp: FSDPConfig = FSDPConfig()
    """train.strategy fsdp: which modules are sharded as units, and resharding after forward"""
    sync_batchnorm: bool = False
    """with several processes: batch-norm statistics over the global batch (SyncBatchNorm, CUDA)"""
    preflight: bool = True
    """run the cheap pre-flight checks (data, loss at init, schedule) at the start of fit; they warn, never stop"""
    freeze: tuple[str, ...] = ()
    """parameters that do not train: backbone (those loaded from model.weights), head, or fnmatch patterns"""
    unfreeze_at_epoch: PositiveInt | None = None
    """the frozen parameters train from this epoch on (counted from 1); null: never"""


class OutputConfig(Section):
    dir: str = "runs"
    """parent of the run directories"""
    loggers: tuple[Literal["tensorboard", "mlflow"], ...] = ()
    """also log to these, besides the run directory: tensorboard, mlflow"""
    mlflow_uri: str | None = None
    """MLflow tracking URI; null: MLFLOW_TRACKING_URI, else MLflow's own default"""
    mlflow_log_model: bool = False
    """also log best.pt to MLflow as an artifact"""


# The sections whose keys belong to the component one of their keys names.
COMPONENT_SECTIONS: dict[str, tuple[str, Registry, type[Section]]] = {
    "data": ("dataset", DATASETS, DataSection),
    "model": ("arch", ARCHITECTURES, ModelSection),
    "optimizer": ("name", OPTIMIZERS, OptimizerSection),
    "scheduler": ("name", SCHEDULERS, SchedulerSection),
}


_REGISTRY_OF_SECTION = {registry.section: registry for registry in REGISTRIES.values() if registry.section}


def _default_section(section: str) -> Section:
    selector, registry, base = COMPONENT_SECTIONS[section]
    return registry[base.model_fields[selector].default].schema()


class Config(Section):
    name: str = ""
    """run name; default: the config file's stem"""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    """seeds every RNG: weights, data order, splits"""
    data: SerializeAsAny[DataSection] = Field(default_factory=lambda: _default_section("data"))
    model: SerializeAsAny[ModelSection] = Field(default_factory=lambda: _default_section("model"))
    optimizer: SerializeAsAny[OptimizerSection] = Field(default_factory=lambda: _default_section("optimizer"))
    scheduler: SerializeAsAny[SchedulerSection] = Field(default_factory=lambda: _default_section("scheduler"))
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()


def section_config(section: str, **keys: Any) -> Section:
    """One component section built from keyword arguments, validated like a config file's:
    `section_config("data", dataset="spirals", points=50)`."""
    return getattr(_validate(Config, {section: keys}, "", Locations("arguments")), section)


# --- pydantic's errors as our messages ----------------------------------------------------

def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes a field holds, through Optional, Union, tuple and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _models_in(argument)]


def _walk(schema: type[BaseModel], raw: Any, loc: tuple) -> tuple[str, list[type[BaseModel]]]:
    """The dotted key of an error location (union tags dropped) and the models at its parent."""
    key, models, node = "", [schema], raw
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(part, int):
            key, node = f"{key}[{part}]", node[part] if isinstance(node, (list, tuple)) and part < len(node) else None
            continue
        if not last and not (isinstance(node, dict) and part in node):  # a discriminated union's tag
            models = [model for model in models if typing.get_args(model.model_fields["name"].annotation) == (part,)]
            continue
        key = f"{key}.{part}" if key else str(part)
        if not last:
            field = next((model.model_fields[part] for model in models if part in model.model_fields), None)
            models = _models_in(field.annotation) if field is not None else []
            node = node.get(part) if isinstance(node, dict) else None
    return key, models


def _bounds(error: dict) -> str:
    context = {key: f"{bound:g}" if isinstance(bound, float) else str(bound) for key, bound in error.get("ctx", {}).items()}
    value = error.get("input")
    if error["type"] == "greater_than":
        return f"{value!r} must be above {context['gt']}"
    if error["type"] == "greater_than_equal":
        return f"{value!r} must be " + ("0 or more" if context["ge"] == "0" else f"at least {context['ge']}")
    if error["type"] == "less_than":
        return f"{value!r} must be below {context['lt']}"
    return f"{value!r} must be at most {context['le']}"


_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "bool_type": "true or false", "string_type": "a string", "tuple_type": "a list",
             "model_type": "a mapping of keys", "model_attributes_type": "a mapping of keys", "dict_type": "a mapping"}


def _problem(error: dict, schema: type[BaseModel], raw: Any, section: str, component: str) -> tuple[str, str]:
    """(dotted key, message) for one pydantic error."""
    key, models = _walk(schema, raw, error["loc"])
    key = f"{section}.{key}" if section and key else section or key
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        valid = [name for model in models for name in model.model_fields]
        where, _, leaf = key.rpartition(".")
        registry = _REGISTRY_OF_SECTION.get(re.sub(r"\[\d+\]", "", where))
        if registry is not None and len(models) == 1 and any(leaf in entry.keys for entry in registry):
            if where not in COMPONENT_SECTIONS:  # a list item, named by its own `name`
                component = typing.get_args(models[0].model_fields["name"].annotation)[0]
            return key, (f"{registry.kind} '{component}' does not take this key (its own keys: "
                         f"{', '.join(models[0].own_keys()) or 'none'}); remove it or pick another {registry.kind}")
        return key, (f"unknown key{f' in {where}' if where else ''}; "
                     f"{did_you_mean(leaf, valid)}valid keys: {', '.join(valid)}")
    if kind == "missing":
        return key, f"required here ({component}); set {key}"
    if kind in _EXPECTED:
        return key, f"expected {_EXPECTED[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return key, _bounds(error)
    if kind == "literal_error":
        choices = [str(choice) for choice in typing.get_args(_literal_of(models, key))] or \
            [choice.strip(" '") for choice in error["ctx"]["expected"].replace(" or ", ",").split(",")]
        return key, f"{value!r} is not valid; {did_you_mean(str(value), choices)}choose from: {', '.join(choices)}"
    if kind == "union_tag_invalid":
        return key, AUGMENTATIONS.unknown_message(error["ctx"]["tag"])
    if kind == "union_tag_not_found":
        return key, f"each item needs a name; choose from: {', '.join(AUGMENTATIONS.names())}"
    if kind in ("too_short", "too_long"):
        return key, f"expected a list of {error['ctx'].get('min_length', error['ctx'].get('max_length'))} " \
                    f"values, got {value!r}"
    if kind == "value_error":
        return key, str(error["ctx"]["error"])
    return key, f"{error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"


def _literal_of(models: list[type[BaseModel]], key: str) -> Any:
    name = key.rpartition(".")[2].partition("[")[0]
    field = next((model.model_fields[name] for model in models if name in model.model_fields), None)
    if field is None:
        return None
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if typing.get_origin(candidate) is Literal:
            return candidate
        for inner in typing.get_args(candidate):
            if typing.get_origin(inner) is Literal:
                return inner
    return None


def _validate_into(schema: type[BaseModel], raw: Any, section: str, component: str, locations: Locations,
                   problems: list[tuple[str, str]]) -> Any:
    """schema.model_validate(raw), its errors added to `problems`; None when it failed."""
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        problems.extend(_problem(item, schema, raw, section, component) for item in error.errors())
        return None


def _raise_problems(problems: list[tuple[str, str]], locations: Locations) -> None:
    if not problems:
        return
    problems = sorted(dict.fromkeys(problems), key=lambda problem: locations.line_of(problem[0]))
    errors = [ConfigError(locations.of(key), key, message) for key, message in problems]
    if len(errors) == 1:
        raise errors[0]
    raise ConfigError(locations.source, "", f"{len(errors)} problems:\n  " + "\n  ".join(map(str, errors)))


def _validate(schema: type[Config], raw: dict, default_name: str, locations: Locations) -> Config:
    """Each component section against its component's schema, then the run-level keys; every
    problem collected before anything is raised."""
    problems: list[tuple[str, str]] = []
    values = dict(raw)
    for key in raw:
        if key not in schema.model_fields:
            problems.append((str(key), f"unknown section; {did_you_mean(str(key), list(schema.model_fields))}"
                                       f"valid sections: {', '.join(schema.model_fields)}"))
            del values[key]
    for section, (selector, registry, base) in COMPONENT_SECTIONS.items():
        given = raw.get(section)
        if given is None:
            values.pop(section, None)
            given = {}
        if not isinstance(given, dict):
            problems.append((section, f"expected a mapping of keys, got {given!r}"))
            values.pop(section, None)
            continue
        name = given.get(selector, base.model_fields[selector].default)
        if not isinstance(name, str):
            problems.append((f"{section}.{selector}", f"expected a name, got {name!r}"))
            values.pop(section, None)
            continue
        try:
            component = registry[name]
        except UserError as error:
            problems.append((f"{section}.{selector}", str(error)))
            values.pop(section, None)
            continue
        built = _validate_into(component.schema, given, section, name, locations, problems)
        if built is None:
            values.pop(section, None)
        else:
            values[section] = built
    if not values.get("name"):
        values["name"] = default_name
    config = _validate_into(schema, values, "", "", locations, problems)
    _raise_problems(problems, locations)
    return config


# --- rules that span sections -------------------------------------------------------------

def get_key(cfg: Config, dotted: str) -> Any:
    """The value at a dotted key (None under an unset optional section or a key a component lacks)."""
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def monitor_choices(head: str, has_val: bool) -> list[str]:
    """Metrics train.monitor may name."""
    metrics = ["loss"] + (["accuracy"] if CLASSIFICATION in HEADS[head].tags else [])
    splits = ("train", "val") if has_val else ("train",)
    return [f"{split}/{metric}" for split in splits for metric in metrics]


def _replace(cfg: Config, section: str, **changes: Any) -> Config:
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=changes)})


def updated(cfg: Config, changes: dict[str, Any]) -> Config:
    """A copy with `section.key` values changed where the section's component has that key
    (`{"data.augment": ()}` leaves a dataset without augmentation as it is)."""
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if key in type(getattr(cfg, section)).model_fields:
            cfg = _replace(cfg, section, **{key: value})
    return cfg


def _check_pairings(cfg: Config, locations: Locations) -> Config:
    if "/" in cfg.name or "\\" in cfg.name or cfg.name in (".", ".."):
        raise ConfigError(locations.of("name"), "name", f"{cfg.name!r} must be a plain name (no / or \\), "
                          "it names the run directory; use output.dir to choose where runs go")
    dataset, arch, head = DATASETS[cfg.data.dataset], ARCHITECTURES[cfg.model.arch], HEADS[cfg.model.head]
    samples = dataset.tags - TASKS
    if samples and arch.tags and not samples & arch.tags:
        fitting = [a.name for a in ARCHITECTURES if a.tags & samples]
        raise ConfigError(locations.of("model.arch"), "model.arch",
                          f"arch '{arch.name}' cannot read dataset '{dataset.name}' "
                          f"(samples: {', '.join(sorted(samples))}); architectures that fit: {', '.join(fitting)}")
    tasks = dataset.tags & TASKS
    if tasks and not tasks & head.tags:
        fitting = [h.name for h in HEADS if h.tags & tasks]
        raise ConfigError(locations.of("model.head"), "model.head",
                          f"head '{head.name}' does {', '.join(sorted(head.tags))}, but dataset "
                          f"'{dataset.name}' does not; heads that fit: {', '.join(fitting)}")
    head_task = CLASSIFICATION if CLASSIFICATION in head.tags else REGRESSION
    task = getattr(cfg.data, "task", None)
    if task == "auto":
        cfg = _replace(cfg, "data", task=head_task)
        if hasattr(cfg.data, "_task_from_head"):  # a source that guards against a guess gone wrong
            cfg.data._task_from_head = True
    elif task is not None and task != head_task:
        raise ConfigError(locations.of("data.task"), "data.task",
                          f"'{task}' does not match head '{head.name}', which does {head_task}; "
                          "set data.task: auto, or pick a head for the task")
    if cfg.train.label_smoothing and cfg.model.head != "softmax":
        raise ConfigError(locations.of("train.label_smoothing"), "train.label_smoothing",
                          f"label smoothing applies to the softmax head only (head here: {cfg.model.head}); "
                          "set it to 0 or use head: softmax")
    _check_fine_tuning(cfg, locations)
    if cfg.train.strategy == "fsdp" and cfg.train.sync_batchnorm:
        raise ConfigError(locations.of("train.sync_batchnorm"), "train.sync_batchnorm",
                          "SyncBatchNorm does not run under train.strategy fsdp; use strategy ddp for batch-norm "
                          "statistics over the global batch, or set sync_batchnorm: false")
    has_val = cfg.data.val_split > 0
    choices = monitor_choices(cfg.model.head, has_val)
    if cfg.train.monitor == "auto":
        # The validation loss, as Keras and Hugging Face watch: accuracy on a small validation set
        # ties often, and keeping the first of a tie keeps an early, undertrained model.
        cfg = _replace(cfg, "train", monitor="val/loss" if has_val else "train/loss")
    elif cfg.train.monitor not in choices:
        raise ConfigError(locations.of("train.monitor"), "train.monitor",
                          f"'{cfg.train.monitor}' is not reported with head '{cfg.model.head}'; "
                          f"{did_you_mean(cfg.train.monitor, choices)}choose from: auto, {', '.join(choices)}")
    return cfg


def _check_fine_tuning(cfg: Config, locations: Locations) -> None:
    """backbone and head name what model.weights set and what it did not: without weights, neither
    means anything; and a thaw needs something frozen."""
    named = [("train.freeze", pattern) for pattern in cfg.train.freeze] + \
        [(f"optimizer.groups[{i}].params", group.params) for i, group in enumerate(cfg.optimizer.groups)]
    for key, pattern in named:
        if pattern in ROLES and cfg.model.weights is None:
            raise ConfigError(locations.of(key), key, f"'{pattern}' means the parameters model.weights "
                              f"{'sets' if pattern == 'backbone' else 'does not set'}, but model.weights is null; set "
                              "model.weights (pretrained, a weight file or a run), or name parameters by pattern")
    if cfg.train.unfreeze_at_epoch is not None and not cfg.train.freeze:
        raise ConfigError(locations.of("train.unfreeze_at_epoch"), "train.unfreeze_at_epoch",
                          "nothing is frozen to unfreeze; set train.freeze (e.g. [backbone]) or remove this key")
    if cfg.train.unfreeze_at_epoch == 1:
        raise ConfigError(locations.of("train.unfreeze_at_epoch"), "train.unfreeze_at_epoch",
                          "1 would unfreeze before the first step (epochs count from 1); use 2 or later, or leave "
                          "train.freeze empty")
    statistics = getattr(cfg.data, "normalize", None)
    if hasattr(statistics, "mean") and (len(statistics.mean) != len(statistics.std) or not statistics.mean):
        raise ConfigError(locations.of("data.normalize"), "data.normalize",
                          f"{len(statistics.mean)} means and {len(statistics.std)} stds; give one of each per channel")
    if cfg.model.weights == "pretrained" and "/" not in cfg.model.arch:
        raise ConfigError(locations.of("model.weights"), "model.weights",
                          f"pretrained: '{cfg.model.arch}' has no published weights; they come with the zoo "
                          "architectures (torchvision/<name>, timm/<name>). Give a weight file or an mltrain run")


def _resolve_data_paths(cfg: Config, config_dir: Path, locations: Locations) -> Config:
    """data.path, data.root, webdataset's shard patterns, a tokenizer file and model.weights
    written in a config file are relative to that file's directory; from --set or a default, to the working directory.
    The resolved config holds them absolute, so a saved config reads the same files from anywhere."""
    shards = (("data", "train"), ("data", "val"), ("data", "test")) if cfg.data.dataset == "webdataset" else ()
    tokenizer = (("data", "tokenizer"),) if getattr(cfg.data, "tokenizer", "char") not in ("char", "bpe") else ()
    for section, key in (("data", "path"), ("data", "root"), ("data", "data_files"), *shards, *tokenizer,
                         ("model", "weights")):
        value = getattr(getattr(cfg, section), key, None)
        written_at = locations.places.get(f"{section}.{key}", "--set")
        base = Path.cwd() if written_at.startswith("--set") else config_dir
        if (section, value) == ("model", "pretrained") or value is None:
            continue
        if cfg.data.dataset == "hf" and key == "path" and (value in HF_BUILDERS or not (base / value).exists()):
            continue  # a builder's name (parquet, imagefolder...) or a hub name, not a path
        cfg = _replace(cfg, section, **{key: _resolved(value, base)})
    return cfg


HF_BUILDERS = ("parquet", "csv", "json", "arrow", "text", "imagefolder", "audiofolder", "webdataset")


def _resolved(value: Any, base: Path) -> Any:
    """Relative paths (in a string, a list or a mapping of them, as data_files holds) made absolute."""
    if isinstance(value, str):
        return value if Path(value).is_absolute() or "://" in value else str((base / value).resolve())
    if isinstance(value, tuple):
        return tuple(_resolved(item, base) for item in value)
    if isinstance(value, dict):
        return {name: _resolved(item, base) for name, item in value.items()}
    return value


# --- public API ---------------------------------------------------------------------------

def _from_raw(raw: Any, overrides: list[str], locations: Locations, default_name: str,
              config_dir: Path) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(locations.source, "",
                          f"a config is a mapping of sections (data, model, ...), got {type(raw).__name__}")
    if rebuilding_stored():  # a checkpoint's, a run's or a study's: as the mltrain that wrote it meant it
        raw = stored_config(raw)
    apply_overrides(raw, list(overrides), locations)
    cfg = _validate(Config, raw, default_name, locations)
    return _check_pairings(_resolve_data_paths(cfg, config_dir, locations), locations)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config file, apply --set overrides, fill defaults and validate."""
    path = Path(path)
    locations = Locations(str(path))
    raw = parse_yaml(read_config_text(path), str(path), locations)
    return _from_raw(raw, overrides, locations, default_name=path.stem, config_dir=path.parent)


def config_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "checkpoint") -> Config:
    """Rebuild a Config from its dumped form (as stored in a checkpoint), with overrides."""
    return _from_raw(copy.deepcopy(raw), overrides, Locations(source), default_name="run", config_dir=Path.cwd())


def stored_config(raw: Any) -> Any:
    """A config as an earlier mltrain stored it (a checkpoint's, an export sidecar's, a run's
    config.yaml, a sweep study's), read with today's keys: a key added since whose default changed
    what a stored run means gets the value the run was trained with. (A cnn's readout was always
    the average over positions.)"""
    model = raw.get("model") if isinstance(raw, dict) else None
    if isinstance(model, dict) and model.get("arch") == "cnn" and "readout" not in model:
        raw = {**raw, "model": {**model, "readout": "avg"}}
    return raw


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (lists, not tuples): every key, defaults filled in."""
    return cfg.model_dump(mode="json")


class _Dumper(yaml.SafeDumper):
    """Block-style mappings with lists kept on one line: `hidden: [128, 64]`."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=not any(isinstance(item, dict) for item in data)))


def dump_config(cfg: Config) -> str:
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
