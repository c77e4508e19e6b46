"""Name -> component tables. A component is registered where it is defined, with its name, help,
tags and the typed schema of its config keys; validation, `mltrain list` and building all read
from that one entry.

A config may also name a component the user brings: an import path `package.module:callable`,
or the name of an installed plugin's entry point (`mltrain.architectures`, `mltrain.datasets`).
Its keyword arguments become its config keys (see `schema_from_signature`). Nothing is imported
that the config, or `mltrain list`, did not ask for.

A config someone else stored (in a checkpoint, an export's sidecar, a sweep study) is rebuilt
`from_stored` it: its import paths are refused, since importing and calling them runs whatever
code they name, unless the user trusts it (`--trust-code`) or this process already took the same
path from the user's own config. Built-ins and installed plugins are always allowed.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import typing
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator

from .errors import UserError


# Names other tools use for our keys, so that `learning_rate` suggests `lr`.
SYNONYMS = {
    "learning_rate": "lr", "lr_rate": "lr", "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
    "bs": "batch_size", "batchsize": "batch_size", "wd": "weight_decay", "hidden_sizes": "hidden",
    "hidden_dims": "hidden", "hidden_layers": "hidden", "optim": "optimizer", "lr_scheduler": "scheduler",
    "schedule": "scheduler", "architecture": "arch", "model_type": "arch", "act": "activation",
    "activation_fn": "activation", "gradient_clip_val": "grad_clip", "clip_grad_norm": "grad_clip",
    "max_grad_norm": "grad_clip", "accumulate_grad_batches": "accumulate",
    "gradient_accumulation_steps": "accumulate", "mixed_precision": "precision", "num_workers": "workers",
    "warmup": "warmup_steps", "dropout_rate": "dropout", "num_heads": "heads", "n_head": "heads",
    "n_layer": "layers", "num_layers": "layers", "n_embd": "d_model", "hidden_dim": "hidden_size",
}


TRUST_FLAG = "--trust-code"
_trusted: ContextVar[bool] = ContextVar("trusted", default=False)  # the user passed TRUST_FLAG
_refusing: ContextVar[bool] = ContextVar("refusing", default=False)  # a stored config's import paths are refused
_stored: ContextVar[bool] = ContextVar("stored", default=False)  # a stored config is being rebuilt


@contextlib.contextmanager
def trusting_stored_code(trusted: bool = True) -> Iterator[None]:
    """Within it, stored configs may name import paths: the user trusts where they came from."""
    token = _trusted.set(trusted)
    try:
        yield
    finally:
        _trusted.reset(token)


def trusts_stored_code() -> bool:
    return _trusted.get()


@contextlib.contextmanager
def from_stored() -> Iterator[None]:
    """While a stored config is rebuilt, its import paths are refused (unless trusted); a refusal
    is a UserError that config validation prefixes with the file and the key."""
    token, stored = _refusing.set(not _trusted.get()), _stored.set(True)
    try:
        yield
    finally:
        _refusing.reset(token)
        _stored.reset(stored)


def rebuilding_stored() -> bool:
    """Whether a stored config is being rebuilt (within `from_stored`)."""
    return _stored.get()


def did_you_mean(word: str, choices: list[str]) -> str:
    synonym = SYNONYMS.get(word.lower())
    if synonym in choices:
        return f"did you mean '{synonym}'? "
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def is_import_path(name: str) -> bool:
    return ":" in name


@dataclass(frozen=True)
class Component:
    name: str  # what a config writes: a short name, or the import path itself
    help: str
    factory: Callable[..., Any]
    schema: type  # the pydantic section class of its keys (the section's shared keys included)
    tags: frozenset[str] = field(default_factory=frozenset)  # e.g. the sample kinds an arch reads
    origin: str = "built-in"  # built-in | entry point of <distribution> | import path

    @property
    def keys(self) -> list[str]:
        """Its own keys, without the ones every component of its section shares."""
        return self.schema.own_keys() if self.schema is not None else []


@dataclass(frozen=True)
class Family:
    """Names `family/member` (`torchvision/resnet18`): `build(member)` makes the component,
    importing the family's library only then. `help`, `schema` and `tags` say what any member
    is, for `mltrain list` and the reference, before a member is named."""
    build: Callable[[str], Component]
    help: str
    schema: type | None = None  # the keys every member takes
    tags: frozenset[str] = field(default_factory=frozenset)  # e.g. the sample kinds its members read


class Registry:
    """One kind of component. Built-ins register themselves when their modules are imported;
    the registry imports those modules on first use."""

    def __init__(self, kind: str, modules: tuple[str, ...], section: str | None = None,
                 entry_point_group: str | None = None):
        self.kind = kind
        self.section = section  # the dotted config section its components' keys live in
        self.entry_point_group = entry_point_group
        self._modules = modules
        self._builtins: dict[str, Component] = {}
        self._adopted: dict[str, Component] = {}  # import paths and entry points, once resolved
        self._bring_your_own: Callable[[str, Callable, str], Component] | None = None
        self._families: dict[str, Family] = {}
        self._loaded = False

    def accept_user_components(self, adopt: Callable[[str, Callable, str], Component]) -> None:
        """Let configs name import paths and plugins of this kind; `adopt(name, callable, origin)`
        turns a user's callable into a component (its schema and factory)."""
        self._bring_your_own = adopt

    def register(self, name: str, help: str, schema: type | None = None,
                 tags: frozenset[str] | set[str] = frozenset()) -> Callable[[Callable], Callable]:
        """Decorator: `@ARCHITECTURES.register("mlp", "...", MLPConfig, tags={IMAGE})`."""
        def add(factory: Callable) -> Callable:
            self.add(Component(name, help, factory, schema, frozenset(tags)))
            return factory
        return add

    def add(self, component: Component) -> None:
        self._builtins[component.name] = component

    def accept_families(self, families: dict[str, Family]) -> None:
        """Names `family/member` (`torchvision/resnet18`), each family's members built by its `Family`."""
        self._families.update(families)

    def family_names(self) -> list[str]:
        return list(self.families())

    def families(self) -> dict[str, Family]:
        """Each family by the name a listing shows (`hf/<name>`)."""
        return {f"{name}/<name>": family for name, family in self._families.items()}

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)
            # Listed in the order of `modules`, whichever module another import loaded first.
            rank = {module: index for index, module in enumerate(self._modules)}
            ordered = sorted(self._builtins.values(), key=lambda component: rank.get(_module_of(component), len(rank)))
            self._builtins = {component.name: component for component in ordered}

    def names(self) -> list[str]:
        self._load_builtins()
        return list(self._builtins)

    def __iter__(self):
        self._load_builtins()
        return iter(list(self._builtins.values()))

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._builtins

    def __getitem__(self, name: str) -> Component:
        return self.get(name)

    def unknown_message(self, name: object) -> str:
        names = self.names() + self.plugin_names() + self.family_names()
        return (f"unknown {self.kind} '{name}', {did_you_mean(str(name), names)}choose from: {', '.join(names)}"
                + (", or an import path package.module:callable" if self._bring_your_own else ""))

    def get(self, name: str) -> Component:
        """A built-in, an installed plugin's entry point, or an import path. UserError naming what
        to do when none of them resolves."""
        self._load_builtins()
        if name in self._builtins:
            return self._builtins[name]
        if name in self._adopted:
            return self._adopted[name]
        family, slash, member = name.partition("/")
        if slash and family in self._families:
            component = self._families[family].build(member)
            self._adopted[name] = component
            return component
        if self._bring_your_own is not None:
            if is_import_path(name):
                if _refusing.get():
                    raise UserError(f"the stored {self.kind} '{name}' is an import path: rebuilding it would import "
                                    f"that module and call it, which runs its code. Pass {TRUST_FLAG} only if you "
                                    "trust where the file came from")
                component = self._bring_your_own(name, import_callable(name, self.kind), "import path")
                self._adopted[name] = component
                return component
            plugin = self._entry_point(name)
            if plugin is not None:
                try:
                    target = plugin.load()
                except Exception as error:  # a broken plugin must not look like a typo
                    raise UserError(f"{self.kind} '{name}': its plugin ({plugin.value}) failed to import: "
                                    f"{type(error).__name__}: {error}; reinstall or fix that package") from None
                origin = f"entry point of {plugin.dist.name}" if plugin.dist else "entry point"
                component = self._bring_your_own(name, target, origin)
                self._adopted[name] = component
                return component
        raise UserError(self.unknown_message(name))

    def _entry_point(self, name: str):
        if self.entry_point_group is None:
            return None
        matches = entry_points(group=self.entry_point_group, name=name)
        return next(iter(matches), None)

    def plugin_names(self) -> list[str]:
        """Installed plugins' names, read from package metadata (nothing is imported)."""
        if self.entry_point_group is None:
            return []
        return sorted({point.name for point in entry_points(group=self.entry_point_group)} - set(self._builtins))

    def plugins(self) -> list[Component]:
        """Every installed plugin, imported (for `mltrain list`)."""
        return [self.get(name) for name in self.plugin_names()]


def _module_of(component: Component) -> str | None:
    factory = getattr(component.factory, "func", component.factory)  # a functools.partial's function
    return getattr(factory, "__module__", None)


def import_callable(path: str, kind: str) -> Callable:
    """`package.module:attribute` -> the attribute, or a UserError saying what is wrong with it."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UserError(f"{kind} '{path}': an import path is package.module:callable, e.g. my_pkg.nets:TinyNet")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"{kind} '{path}': cannot import module '{module_name}' ({error}); check the spelling, "
                        "and that its package is installed or its directory is on PYTHONPATH") from None
    except Exception as error:
        raise UserError(f"{kind} '{path}': importing module '{module_name}' failed: "
                        f"{type(error).__name__}: {error}") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = [name for name in dir(module) if not name.startswith("_")]
            raise UserError(f"{kind} '{path}': module '{module_name}' has no '{attribute}'; "
                            f"{did_you_mean(attribute, public)}check the name after the colon")
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"{kind} '{path}': '{attribute}' is not callable; name a class or a function")
    return target


def schema_from_signature(target: Callable, base: type, skip: tuple[str, ...], name: str) -> type:
    """A section schema whose keys are the keyword arguments of `target`: typed by their hints
    (or by their default's type), required when they have no default. The arguments mltrain
    passes itself (`skip`) and the section's shared keys are left out."""
    from pydantic import ConfigDict, create_model

    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # unresolvable annotations: take the defaults' types instead
        hints = {}
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(target).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name in skip \
                or parameter.name in base.model_fields or parameter.name == "self":
            continue
        default = parameter.default
        hint = hints.get(parameter.name)
        if hint is None:
            hint = type(default) if default not in (inspect.Parameter.empty, None) else Any
        fields[parameter.name] = (hint, ... if default is inspect.Parameter.empty else default)
    # Hints may name classes pydantic has no schema for (torch.Tensor in torch's optimizers).
    lenient = type(f"{base.__name__}Lenient", (base,), {"model_config": ConfigDict(arbitrary_types_allowed=True)})
    return create_model(name, __base__=lenient, **fields)


# Tags. Datasets carry the kind of sample they yield and the tasks their targets allow;
# architectures carry the sample kinds they read; heads carry the task they solve.
IMAGE = "image"  # (C, H, W)
VECTOR = "vector"  # (F,) features, e.g. a table row or a 2-D point
SEQUENCE = "sequence"  # (L,) or (L, F): L steps of F features (1 if absent)
TOKENS = "tokens"  # (L,) integer token ids, e.g. characters of a text
CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = frozenset({CLASSIFICATION, REGRESSION})

DATASETS = Registry("dataset", ("mltrain.data.builtin", "mltrain.data.sequences", "mltrain.data.text",
                                "mltrain.data.vision", "mltrain.data.image_folder", "mltrain.data.tabular",
                                "mltrain.data.arrays", "mltrain.data.hf", "mltrain.data.tar_shards",
                                "mltrain.data.tokens", "mltrain.data.user"),
                    section="data", entry_point_group="mltrain.datasets")
AUGMENTATIONS = Registry("augmentation", ("mltrain.data.augment",), section="data.augment")
ARCHITECTURES = Registry("architecture", ("mltrain.models.mlp", "mltrain.models.cnn", "mltrain.models.resnet",
                                          "mltrain.models.recurrent", "mltrain.models.transformer",
                                          "mltrain.models.gpt", "mltrain.models.zoo"),
                         section="model", entry_point_group="mltrain.architectures")
ACTIVATIONS = Registry("activation", ("mltrain.models.layers",))
HEADS = Registry("head", ("mltrain.losses",))
OPTIMIZERS = Registry("optimizer", ("mltrain.optim",), section="optimizer")
SCHEDULERS = Registry("scheduler", ("mltrain.optim",), section="scheduler")

REGISTRIES = {
    "architectures": ARCHITECTURES,
    "activations": ACTIVATIONS,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "datasets": DATASETS,
    "augmentations": AUGMENTATIONS,
    "heads": HEADS,
}
