"""Architectures by name; the builder unpacks the model config into plain arguments.

A user's architecture is any callable `f(input_shape, num_outputs, **keys) -> nn.Module`, named by
import path (`arch: my_pkg.nets:TinyNet`) or by an installed plugin's entry point in the group
`mltrain.architectures`. `input_shape` is one sample's shape without the batch dimension, e.g.
(1, 28, 28); `num_outputs` is what the head needs per sample (classes for softmax). Its other
keyword arguments are its config keys, typed by their hints and defaults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import UserError
from ..registry import ARCHITECTURES, Component, schema_from_signature
from ..schema import ModelSection

if TYPE_CHECKING:
    from torch import nn

    from ..data import DataSpec

ARGUMENTS_MLTRAIN_PASSES = ("input_shape", "num_outputs")


def _adopt(name: str, factory: Callable, origin: str) -> Component:
    summary = (factory.__doc__ or "").strip().splitlines()
    return Component(name, summary[0] if summary else f"your architecture ({origin})", factory,
                     schema_from_signature(factory, ModelSection, ARGUMENTS_MLTRAIN_PASSES, name), origin=origin)


ARCHITECTURES.accept_user_components(_adopt)


def build_model(cfg: ModelSection, spec: DataSpec, num_outputs: int) -> nn.Module:
    from torch import nn

    component = ARCHITECTURES[cfg.arch]
    try:
        model = component.factory(input_shape=tuple(spec.sample_shape), num_outputs=num_outputs, **cfg.own_values())
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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
