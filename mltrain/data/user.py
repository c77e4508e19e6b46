"""Datasets users bring: an import path (`dataset: my_pkg.data:load`) or a plugin's entry point in
the group `mltrain.datasets`.

The callable takes its config keys as keyword arguments (plus `seed`, if it has that argument)
and returns a dict of splits: "train" and optionally "val" and "test", each a pair (x, y) of
arrays or tensors with one sample per row, and optionally "classes", the class names. x holds
floats; y integer class ids (classification) or floats (regression, with head: linear). A
missing val split is held out of train with data.val_split and the run's seed.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch

from ..errors import UserError
from ..registry import DATASETS, Component, schema_from_signature
from ..schema import DataSection
from .arrays import most_classes
from .dataset import DataSpec, DataSplits
from .splits import as_tensors, split_arrays

SPLITS = ("train", "val", "test")


def _adopt(name: str, load: Callable, origin: str) -> Component:
    takes_seed = "seed" in inspect.signature(load).parameters

    def build(val_split: float, seed: int, **keys: Any) -> DataSplits:
        try:
            returned = load(**keys, **({"seed": seed} if takes_seed else {}))
        except UserError:
            raise
        except Exception as error:  # the loader's own failure, said in one line with where it came from
            detail = str(error).splitlines()[0] if str(error) else ""
            raise UserError(f"data.dataset '{name}' failed to load: {type(error).__name__}: {detail}; fix it, "
                            "then run again (MLTRAIN_DEBUG=1 shows the traceback)") from None
        return in_memory(name, returned, val_split, seed)

    summary = (load.__doc__ or "").strip().splitlines()
    return Component(name, summary[0] if summary else f"your dataset ({origin})", build,
                     schema_from_signature(load, DataSection, ("seed",), name), origin=origin)


DATASETS.accept_user_components(_adopt)


def _array(name: str, what: str, value: Any) -> np.ndarray:
    try:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except Exception as error:
        raise UserError(f"dataset '{name}': {what} is not an array ({type(value).__name__}: {error})") from None
    if array.dtype == object or array.ndim == 0:
        raise UserError(f"dataset '{name}': {what} must be a numeric array with one sample per row, "
                        f"got {array.dtype} of shape {array.shape}")
    return array


def _real(array: np.ndarray) -> bool:
    """Numbers a float32 or int64 cast keeps whole: no strings, no complex values."""
    return (np.issubdtype(array.dtype, np.number) or array.dtype == bool) \
        and not np.issubdtype(array.dtype, np.complexfloating)


def _check_class_ids(name: str, pairs: dict[str, tuple[np.ndarray, np.ndarray]], highest: int) -> None:
    """Refuse ids far above the number in use before one class name is made per id up to the largest."""
    distinct = len(np.unique(np.concatenate([y.ravel() for _, y in pairs.values()])))
    if highest + 1 > most_classes(distinct):
        split = next(split for split, (_, y) in pairs.items() if int(y.max()) == highest)
        raise UserError(f"dataset '{name}': the {split} split has class id {highest} but the splits use only "
                        f"{distinct} distinct ids; relabel y to 0..{distinct - 1} (or return 'classes' naming "
                        "every class)")


def in_memory(name: str, returned: Any, val_split: float, seed: int) -> DataSplits:
    """Check what a user's loader returned and make the splits of it."""
    if not isinstance(returned, dict) or "train" not in returned:
        raise UserError(f"dataset '{name}' returned {type(returned).__name__}; it must return a dict with "
                        "'train': (x, y) and optionally 'val', 'test' and 'classes'")
    unknown = set(returned) - {*SPLITS, "classes"}
    if unknown:
        raise UserError(f"dataset '{name}' returned unknown keys {sorted(unknown)}; use train, val, test, classes")
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in SPLITS:
        if returned.get(split) is None:
            continue
        pair = returned[split]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UserError(f"dataset '{name}': '{split}' must be a pair (x, y)")
        x, y = _array(name, f"{split} x", pair[0]), _array(name, f"{split} y", pair[1])
        if len(x) != len(y):
            raise UserError(f"dataset '{name}': {split} has {len(x)} samples in x but {len(y)} targets in y")
        if not len(y):
            raise UserError(f"dataset '{name}': the {split} split is empty")
        if not (_real(x) and _real(y)):
            raise UserError(f"dataset '{name}': {split} holds x of {x.dtype} and y of {y.dtype}; x must be real "
                            "numbers and y integer class ids (or numbers for regression): map labels such as "
                            "strings to 0..K-1 and return their names as 'classes'")
        classify = np.issubdtype(y.dtype, np.integer)
        pairs[split] = (x.astype(np.float32), y.astype(np.int64) if classify else y.astype(np.float32))
    x_train, y_train = pairs["train"]
    for split, (x, y) in pairs.items():
        if x.shape[1:] != x_train.shape[1:] or y.dtype != y_train.dtype:
            raise UserError(f"dataset '{name}': {split} holds samples {x.shape[1:]} with {y.dtype} targets, train "
                            f"{x_train.shape[1:]} with {y_train.dtype}; every split needs the same kinds")
    num_classes, class_names = None, ()
    if y_train.dtype == np.int64:
        highest = max(int(y.max()) for _, y in pairs.values())
        if not returned.get("classes"):
            _check_class_ids(name, pairs, highest)
        class_names = tuple(map(str, returned.get("classes") or range(highest + 1)))
        if min(int(y.min()) for _, y in pairs.values()) < 0 or highest >= len(class_names):
            raise UserError(f"dataset '{name}': class ids must lie in 0..{len(class_names) - 1} "
                            f"({len(class_names)} classes)")
        num_classes = len(class_names)
    splits = split_arrays(pairs["train"], val_split, seed, test_split=0.0, val=pairs.get("val"),
                          test=pairs.get("test"))
    spec = DataSpec(tuple(x_train.shape[1:]), num_classes, class_names, tuple(y_train.shape[1:]))
    return DataSplits(spec, as_tensors(splits))
