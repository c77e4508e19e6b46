"""The base of every typed config section (pydantic v2), and the keys each section shares.

A component declares its own keys by subclassing its section's base next to its code, with each
default written once and its meaning in the docstring under it, e.g. in models/mlp.py:

    class MLPConfig(ModelSection):
        hidden: tuple[PositiveInt, ...] = (128,)
        \"\"\"width of each hidden layer\"\"\"
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]  # at least 0 and below 1


def name_in(registry_name: str) -> AfterValidator:
    """A string field that must name a component of a registry (`model.activation: relu`)."""
    def check(value: str) -> str:
        from . import registry

        table = getattr(registry, registry_name)
        if value not in table:
            raise ValueError(table.unknown_message(value))
        return value
    check.registry_name = registry_name  # read by the generated config reference
    return AfterValidator(check)


class Section(BaseModel):
    """Unknown keys refused, values checked strictly (no "5" for 5, no 1 for true), frozen once
    built. Lists are read as tuples, so YAML's `[64, 32]` fills a `tuple[int, ...]`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)
    is_section_base: ClassVar[bool] = False  # True on the classes holding a section's shared keys

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: tuple(item) if isinstance(item, list) else item for key, item in value.items()}
        return value

    @classmethod
    def shared_keys(cls) -> list[str]:
        """The keys every component of this section takes."""
        base = next((klass for klass in cls.__mro__ if klass.__dict__.get("is_section_base")), None)
        return list(base.model_fields) if base is not None else []

    @classmethod
    def own_keys(cls) -> list[str]:
        """The keys only this component takes."""
        shared = cls.shared_keys()
        return [name for name in cls.model_fields if name not in shared]

    def own_values(self) -> dict[str, Any]:
        """This component's own keys and values: the keyword arguments of its factory."""
        return {name: getattr(self, name) for name in self.own_keys()}


class DataSection(Section):
    is_section_base: ClassVar[bool] = True
    dataset: str = "digits"
    """a name from `mltrain list datasets`, or an import path package.module:callable"""
    batch_size: PositiveInt = 64
    """samples per optimizer step (per process under DDP)"""
    val_split: Fraction = 0.1
    """fraction of train held out (seeded) when the dataset has no val split"""
    limit: PositiveInt | None = None
    """train on the first N training samples only (quick runs); null: all"""
    drop_last: bool | Literal["auto"] = "auto"
    """leave out each epoch's last training batch when it is smaller than the others (static shapes); auto: when train.compile is reduce-overhead or max-autotune"""


class ModelSection(Section):
    is_section_base: ClassVar[bool] = True
    arch: str = "mlp"
    """a name from `mltrain list architectures`, or an import path package.module:callable"""
    head: Annotated[str, name_in("HEADS")] = "softmax"
    """softmax (multi-class) | sigmoid (binary / one-vs-rest) | linear (regression)"""
    weights: str | None = None
    """starting weights: null (random) | pretrained (a zoo's published ones) | a .safetensors or .pt/.pth file, or an mltrain run or checkpoint"""
    weights_strict: bool = True
    """refuse weights naming tensors the model does not have; false: only report them"""


class ParameterGroup(Section):
    params: str
    """backbone, head, or an fnmatch pattern on dotted parameter names (`*.bias`, `layer4.*`)"""
    lr_scale: PositiveFloat = 1.0
    """this group's lr as a multiple of optimizer.lr, through every schedule and warmup"""
    weight_decay: NonNegativeFloat | None = None
    """this group's weight decay; null: optimizer.weight_decay on weight matrices, none on biases and norms"""


class OptimizerSection(Section):
    is_section_base: ClassVar[bool] = True
    name: str = "adam"
    """a name from `mltrain list optimizers`, or an import path such as torch.optim:Adagrad"""
    lr: PositiveFloat = 1e-3
    """peak learning rate"""
    weight_decay: NonNegativeFloat = 0.0
    """on weight matrices and kernels only, never on biases or norms; L2 or decoupled as the optimizer does it"""
    groups: tuple[ParameterGroup, ...] = ()
    """per-group settings, e.g. [{params: backbone, lr_scale: 0.1}]; a parameter takes the first that matches"""


class SchedulerSection(Section):
    is_section_base: ClassVar[bool] = True
    name: str = "constant"
    """a name from `mltrain list schedulers`, or an import path such as torch.optim.lr_scheduler:StepLR"""
    warmup_steps: NonNegativeInt = 0
    """optimizer steps of linear warmup from lr/warmup_steps to lr"""


class AugmentSection(Section):
    is_section_base: ClassVar[bool] = True
    name: str
    """a name from `mltrain list augmentations`"""


def describe_keys(schema: type[Section] | None) -> str:
    """`hidden=[128], activation=relu` for `mltrain list`; required keys show `(required)`."""
    if schema is None:
        return ""
    shown = []
    for name in schema.own_keys():
        field = schema.model_fields[name]
        default = field.get_default(call_default_factory=True)
        if field.is_required():
            shown.append(f"{name} (required)")
        else:
            shown.append(f"{name}={default if isinstance(default, str) else json.dumps(default)}")
    return ", ".join(shown)


class NoKeys(Section):
    """The schema of a component without keys of its own (heads, activations, losses)."""
