"""Dataset keys that several sources share: images that may be augmented, files on disk."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import PrivateAttr

from ..schema import DataSection, Fraction, PositiveFloat, Section
from .augment import AugmentList
from .splits import TEST_FRACTION


class Statistics(Section):
    mean: tuple[float, ...]
    """per channel, of pixel values scaled to 0..1 (as torchvision's transforms write them)"""
    std: tuple[PositiveFloat, ...]
    """per channel, on the same scale"""


# auto: the published weights' statistics with model.weights: pretrained, else the data's
Normalization = Union[Literal["auto", "data", "none"], Statistics]


class ImageDataConfig(DataSection):
    augment: AugmentList = ()
    """training-batch augmentations in order, e.g. [{name: crop, padding: 4}, {name: flip}]; never in eval"""


class PixelImagesConfig(ImageDataConfig):
    """Images stored as pixels (uint8), normalised per channel as each batch is taken."""
    normalize: Normalization = "auto"
    """auto (the pretrained weights' statistics with model.weights: pretrained, else data) | data (the training split's per-channel mean and std) | none (pixels scaled to 0..1) | {mean: [...], std: [...]} on the 0..1 scale"""


class FileDataConfig(DataSection):
    path: str
    """the data file; relative paths are read from the config file's directory"""


class HeldOutTest(DataSection):
    test_split: Fraction = TEST_FRACTION
    """fraction held out as test (fixed seed) when the source has no test split"""


Task = Literal["auto", "classification", "regression"]  # auto: from model.head (linear: regression)


class TargetTask(DataSection):
    """A source whose target may be classes or numbers: `task`, and whether the head alone chose it
    (then a target that looks like a quantity is not turned into classes)."""
    task: Task = "auto"
    """what the target is; auto: from model.head (linear: regression)"""
    _task_from_head: bool = PrivateAttr(False)  # auto was resolved from model.head, not written

    def own_values(self) -> dict[str, Any]:
        return {**super().own_values(), "task_from_head": self._task_from_head}
