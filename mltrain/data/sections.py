"""Dataset keys that several sources share: images that may be augmented, files on disk."""

from __future__ import annotations

from typing import Literal

from ..schema import DataSection, Fraction
from .augment import AugmentList
from .splits import TEST_FRACTION


class ImageDataConfig(DataSection):
    augment: AugmentList = ()
    """training-batch augmentations in order, e.g. [{name: crop, padding: 4}, {name: flip}]; never in eval"""


class FileDataConfig(DataSection):
    path: str
    """the data file; relative paths are read from the config file's directory"""


class HeldOutTest(DataSection):
    test_split: Fraction = TEST_FRACTION
    """fraction held out as test (fixed seed) when the source has no test split"""


Task = Literal["auto", "classification", "regression"]  # auto: from model.head (linear: regression)
