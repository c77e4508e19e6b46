"""Architectures from the model zoos, by name: `torchvision/<name>` (any classification model of
`torchvision.models.list_models`), `timm/<name>` (with the optional timm package) and `hf/<name>`
(Hugging Face transformers language models and text classifiers: models/hf.py). A torchvision or
timm model is built untrained with its classifier sized to the data and its stem to the data's
channels; the published weights (`model.weights: pretrained`) and their normalisation statistics
come from the zoo's own cache, downloaded there when missing and online.

torchvision, timm and transformers are imported only when a config names one of these.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..registry import ARCHITECTURES, IMAGE, TOKENS, Component, Family, did_you_mean
from ..schema import ModelSection
from .hf import HF_FAMILY_HELP, HFModelConfig, hf_component

if TYPE_CHECKING:
    from torch import nn

TIMM_PIP = 'pip install "mltrain[timm]"'
ZOO_CHANNELS = 3  # the zoos' models read RGB images


def _timm():
    try:
        import timm
    except ImportError:
        raise UserError(f"model.arch timm/...: timm is not installed; {TIMM_PIP}") from None
    return timm


def torchvision_names() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)  # the classification models only


def _torchvision_component(name: str) -> Component:
    names = torchvision_names()
    if name not in names:
        raise UserError(f"model.arch: torchvision has no classification model '{name}'; "
                        f"{did_you_mean(name, names)}search with `mltrain list architectures --search {name[:6]}`")

    def build(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        from torchvision import models

        model = _with_input_channels(models.get_model(name, weights=None, num_classes=num_outputs), input_shape[0])
        model.register_forward_hook(_main_output)  # googlenet and inception add auxiliary outputs in training
        return _fits_input(model, f"torchvision/{name}", input_shape)
    return Component(f"torchvision/{name}", f"torchvision's {name}, its classifier sized to the data", build,
                     ModelSection, frozenset({IMAGE}))


def _timm_component(name: str) -> Component:
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:8]}*")[:8]
        raise UserError(f"model.arch: timm has no model '{name}'"
                        + (f"; close: {', '.join(close)}" if close else "")
                        + f"; search with `mltrain list architectures --search {name[:6]}`")

    def build(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
        model = timm.create_model(name, pretrained=False, num_classes=num_outputs, in_chans=input_shape[0])
        return _fits_input(model, f"timm/{name}", input_shape)
    return Component(f"timm/{name}", f"timm's {name}, its classifier sized to the data", build, ModelSection,
                     frozenset({IMAGE}))


FOUND_BY_SEARCH = "`mltrain list architectures --search TEXT` finds names"
ARCHITECTURES.accept_families({
    "torchvision": Family(_torchvision_component, "any classification model of torchvision, its classifier sized to "
                          f"the data and its stem to the data's channels; {FOUND_BY_SEARCH}", ModelSection,
                          frozenset({IMAGE})),
    "timm": Family(_timm_component, "any model of timm (mltrain[timm]), its classifier sized to the data and its "
                   f"stem to the data's channels; {FOUND_BY_SEARCH}", ModelSection, frozenset({IMAGE})),
    "hf": Family(hf_component, HF_FAMILY_HELP, HFModelConfig, frozenset({TOKENS})),
})


def _main_output(module: nn.Module, inputs: Any, output: Any) -> Any:
    """The classifier's logits of a model that returns auxiliary ones beside them while training."""
    return output.logits if isinstance(output, tuple) and hasattr(output, "logits") else output


def _fits_input(model: nn.Module, arch: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The model, once it has read one sample of the data's size: a model built for a fixed size
    (a ViT's 224 px) is refused with the size to set, before any data is read into it."""
    import torch

    if next(model.parameters()).is_meta:  # sizing a stored model (restore): no data to try
        return model
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except Exception as error:
        raise UserError(f"model.arch {arch} cannot read images of {tuple(input_shape)} "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}); "
                        "set data.image_size to the size it was made for (often 224)") from None
    return model.train(was_training)


def _with_input_channels(model: nn.Module, channels: int) -> nn.Module:
    """The first convolution rebuilt for `channels` input channels when the data has not 3."""
    from torch import nn

    if channels == ZOO_CHANNELS:
        return model
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == ZOO_CHANNELS:
                setattr(parent, child_name, nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride, child.padding, child.dilation,
                    child.groups, child.bias is not None, child.padding_mode))
                return model
    raise UserError(f"model.arch: this model has no 3-channel input convolution to fit the data's {channels} "
                    "channels; use 3-channel images")


def zoo_of(arch: str) -> tuple[str, str] | None:
    """("torchvision" | "timm", model name) for a zoo architecture, else None."""
    family, slash, name = arch.partition("/")
    return (family, name) if slash and family in ("torchvision", "timm") else None


def published_weights(arch: str) -> tuple[dict[str, Any], str]:
    """The zoo's published weights of `arch` (a state dict, on the CPU) and where they came from."""
    family, name = zoo_of(arch)
    return _torchvision_weights(name) if family == "torchvision" else _timm_weights(name)


def _torchvision_weights(name: str) -> tuple[dict[str, Any], str]:
    import torch
    from torchvision import models

    try:
        weights = models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        raise UserError(f"model.weights: pretrained: torchvision publishes no weights for {name}; "
                        "give a weight file instead, or null to start from random weights") from None
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not file.is_file():
        try:
            torch.hub.load_state_dict_from_url(weights.url, progress=True, map_location="cpu", weights_only=True)
        except Exception as error:  # offline, refused, interrupted: the file is not there
            raise UserError(f"model.weights: pretrained: {file.name} is not in torch's cache and could not be "
                            f"downloaded ({type(error).__name__}: {str(error)[:120]}); download {weights.url} and "
                            f"put it at {file} (the cache follows TORCH_HOME)") from None
    from ..weights import read_weight_file

    return read_weight_file(file), f"torchvision's {weights} ({file})"


def _timm_weights(name: str) -> tuple[dict[str, Any], str]:
    timm = _timm()
    try:
        model = timm.create_model(name, pretrained=True)
    except Exception as error:  # not cached and offline, or no published weights
        from huggingface_hub.constants import HF_HUB_CACHE

        source = getattr(timm.get_pretrained_cfg(name), "hf_hub_id", None) or name
        raise UserError(f"model.weights: pretrained: timm's weights for {name} ({source}) are not in the Hugging "
                        f"Face cache ({HF_HUB_CACHE}) and could not be fetched ({type(error).__name__}: "
                        f"{str(error)[:120]}); fetch them once online (timm.create_model('{name}', pretrained=True)) "
                        "or give a weight file") from None
    return model.state_dict(), f"timm's {model.pretrained_cfg.get('hf_hub_id') or name}"


def published_statistics(arch: str) -> tuple[list[float], list[float]]:
    """The (mean, std) per RGB channel the zoo's published weights were trained with."""
    family, name = zoo_of(arch)
    if family == "torchvision":
        from torchvision import models

        try:
            transform = models.get_model_weights(name).DEFAULT.transforms()
        except (ValueError, AttributeError):
            raise UserError(f"data.normalize: auto: torchvision publishes no weights, so no statistics, for {name}; "
                            "set data.normalize: data or give {mean: [...], std: [...]}") from None
        return list(transform.mean), list(transform.std)
    config = _timm().get_pretrained_cfg(name)
    if config is None:
        raise UserError(f"data.normalize: timm has no published statistics for {name}; set data.normalize: data "
                        "or give {mean: [...], std: [...]}")
    return list(config.mean), list(config.std)


def search(pattern: str) -> dict[str, list[str]]:
    """The zoo names containing `pattern`, by family ({"torchvision": [...], "timm": [...]});
    timm's only when it is installed."""
    found = {"torchvision": [f"torchvision/{name}" for name in torchvision_names() if pattern.lower() in name]}
    try:
        import timm
    except ImportError:
        return found
    found["timm"] = [f"timm/{name}" for name in timm.list_models(f"*{pattern.lower()}*")]
    return found
