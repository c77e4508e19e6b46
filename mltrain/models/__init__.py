"""Architectures by name; the builder unpacks the model config into plain arguments.

A user's architecture is any callable `f(input_shape, num_outputs, **keys) -> nn.Module`, named by
import path (`arch: my_pkg.nets:TinyNet`) or by an installed plugin's entry point in the group
`mltrain.architectures`. `input_shape` is one sample's shape without the batch dimension, e.g.
(1, 28, 28); `num_outputs` is what the head needs per sample (classes for softmax). Its other
keyword arguments are its config keys, typed by their hints and defaults.
"""

from __future__ import annotations

import contextlib
import inspect
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import UserError
from ..registry import ARCHITECTURES, Component, schema_from_signature
from ..schema import ModelSection

if TYPE_CHECKING:
    from torch import nn

    from ..data import DataSpec

ARGUMENTS_MLTRAIN_PASSES = ("input_shape", "num_outputs")

# The files a checkpoint's model was built from besides its config keys (a Hugging Face model's
# config.json), while a model is rebuilt from that checkpoint.
STORED_MODEL_FILES: ContextVar[dict[str, str] | None] = ContextVar("stored_model_files", default=None)


def model_files(model: nn.Module) -> dict[str, str] | None:
    """What a checkpoint must carry to rebuild `model` without the files it came from: a
    transformers model's config.json; None for the others."""
    config = getattr(model, "config", None)
    return {"config.json": config.to_json_string()} if hasattr(config, "to_json_string") else None


@contextlib.contextmanager
def built_from(files: Any) -> Iterator[None]:
    """Models built inside read `files` (a checkpoint's model_files) instead of their sources."""
    token = STORED_MODEL_FILES.set(files if isinstance(files, dict) else None)
    try:
        yield
    finally:
        STORED_MODEL_FILES.reset(token)


def _adopt(name: str, factory: Callable, origin: str) -> Component:
    summary = (factory.__doc__ or "").strip().splitlines()
    return Component(name, summary[0] if summary else f"your architecture ({origin})", factory,
                     schema_from_signature(factory, ModelSection, ARGUMENTS_MLTRAIN_PASSES, name), origin=origin)


ARCHITECTURES.accept_user_components(_adopt)


def build_model(cfg: ModelSection, spec: DataSpec, num_outputs: int) -> nn.Module:
    from torch import nn

    component = ARCHITECTURES[cfg.arch]
    try:
        model = component.factory(input_shape=tuple(spec.sample_shape), num_outputs=num_outputs,
                                  **_data_arguments(component, spec), **cfg.own_values())
    except UserError:
        raise
    except Exception as error:
        if component.origin == "built-in":
            raise
        raise UserError(f"model.arch '{cfg.arch}' failed to build for samples {tuple(spec.sample_shape)} and "
                        f"{num_outputs} outputs: {type(error).__name__}: {error}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model.arch '{cfg.arch}' returned {type(model).__name__}, not a torch.nn.Module; "
                        "it must return the model (input_shape and num_outputs are passed as keywords)")
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise UserError(f"model.arch '{cfg.arch}' built a model with no parameters to train; register its weights "
                        "as nn.Parameter (or in submodules) so the optimizer can reach them")
    return model


def _data_arguments(component: Component, spec: DataSpec) -> dict[str, Any]:
    """`spec` for a built-in builder that takes it (a model that checks the data beyond its shape
    and outputs: what its targets are, how many token ids it reads); a user's `spec` argument is
    one of its config keys, never this."""
    if component.origin == "built-in" and "spec" in inspect.signature(component.factory).parameters:
        return {"spec": spec}
    return {}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
