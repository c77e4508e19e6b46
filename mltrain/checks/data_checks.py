"""Checks of the data alone, before any model sees it: non-finite values, class ids out of range,
class balance, samples shared between train and the held-out splits, and constant features.

They read the samples as stored (uint8 images stay uint8), so they cost one pass over the data
and no training; images streamed from disk are compared by their files' bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..data import DataSplits
from ..data.inputs import Inputs
from ..data.streamed import StreamedSamples
from .result import CheckResult

IMBALANCE_LIMIT = 10.0  # warn when the largest class has more than this many times the smallest's samples
LEAK_LIMIT = 0.01  # fail when this fraction of a held-out split also occurs in train; fewer: warn
EXAMPLES = 3  # examples shown per finding
HELD_OUT = ("val", "test")


def stored_samples(x: Any) -> torch.Tensor | None:
    """A split's samples as stored: a tensor (N, ...), or None for images streamed from disk."""
    if isinstance(x, StreamedSamples):
        return None
    return x.stored if isinstance(x, Inputs) else x


def _first_indices(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten()[:EXAMPLES].tolist()


def non_finite_values(data: DataSplits) -> CheckResult:
    """NaN or inf in any split's inputs, or in regression targets."""
    found, values = [], {}
    for split, (x, y) in data.splits.items():
        for what, tensor in (("inputs", stored_samples(x)), ("targets", y)):
            if tensor is None or not tensor.is_floating_point():
                continue  # integer samples (uint8 images, token ids, class ids) are always finite
            bad = ~torch.isfinite(tensor.reshape(len(tensor), -1)).all(dim=1)  # (N,) per sample
            count = int(bad.sum())
            if count:
                values[f"{split}/{what}"] = {"samples": count, "examples": _first_indices(bad)}
                found.append(f"{split} {what}: {count} samples with NaN or inf (e.g. index "
                             f"{', '.join(map(str, _first_indices(bad)))})")
    if found:
        return CheckResult("non-finite values", "fail", "; ".join(found),
                           "remove or impute those samples: one NaN makes the loss, and then every weight, NaN",
                           values)
    return CheckResult("non-finite values", "pass", f"none in {', '.join(data.splits)}")


def labels_in_range(data: DataSplits) -> CheckResult:
    """Every class id of every split lies in 0..classes-1."""
    classes = data.spec.num_classes
    if classes is None:
        return CheckResult("labels in range", "skip", "regression targets: no class ids")
    found, values = [], {}
    for split, (_, y) in data.splits.items():
        outside = ((y < 0) | (y >= classes)).reshape(len(y), -1)  # (N, targets per sample)
        bad = outside.any(dim=1)
        count = int(bad.sum())
        if count:
            examples = _first_indices(bad)
            values[split] = {"samples": count, "examples": examples}
            found.append(f"{split}: {count} samples with ids outside 0..{classes - 1} (e.g. " + ", ".join(
                f"{int(y[i].flatten()[outside[i]][0])} at index {i}" for i in examples) + ")")
    if found:
        return CheckResult("labels in range", "fail", "; ".join(found),
                           f"class ids must be 0..{classes - 1}: remap the labels so every split uses the same ids",
                           values)
    return CheckResult("labels in range", "pass", f"every id in 0..{classes - 1} ({classes} classes)")


def class_balance(data: DataSplits) -> CheckResult:
    """The largest class against the smallest, in the training split."""
    spec = data.spec
    if spec.num_classes is None:
        return CheckResult("class balance", "skip", "regression targets")
    if spec.target_shape:
        return CheckResult("class balance", "skip", "a class per position (e.g. next characters): "
                           "their frequencies are the data's own")
    counts = torch.bincount(data.splits["train"][1].flatten().cpu(), minlength=spec.num_classes).tolist()
    names = spec.class_names or tuple(map(str, range(spec.num_classes)))
    most, least = max(range(len(counts)), key=counts.__getitem__), min(range(len(counts)), key=counts.__getitem__)
    values = {"counts": dict(zip(names, counts))}
    fix = ("judge the model by per-class recall and F1 (mltrain eval prints them), not accuracy alone; "
           "collect or oversample the rare classes")
    if counts[least] == 0:
        empty = [name for name, count in zip(names, counts) if count == 0]
        return CheckResult("class balance", "warn", f"no training samples for class(es) {', '.join(empty)}",
                           fix, values)
    ratio = counts[most] / counts[least]
    detail = f"{counts[most]} samples in every class" if ratio == 1 else \
        f"largest '{names[most]}' {counts[most]}, smallest '{names[least]}' {counts[least]} ({ratio:.1f}x)"
    if ratio > IMBALANCE_LIMIT:
        return CheckResult("class balance", "warn", detail, fix, values)
    return CheckResult("class balance", "pass", detail, values=values)


def _sample_hashes(x: Any) -> list[bytes] | None:
    """A 128-bit digest of each sample's stored bytes (of each file, for images streamed from
    disk); None for samples in shards, which are not read in full before training."""
    if isinstance(x, StreamedSamples):
        files = getattr(x.files, "files", None)
        return None if files is None else [hashlib.blake2b(path.read_bytes(), digest_size=16).digest()
                                           for path in files]
    rows = np.ascontiguousarray(stored_samples(x).detach().cpu().reshape(len(x), -1).numpy())
    return [hashlib.blake2b(row.data, digest_size=16).digest() for row in rows]


def leaked_duplicates(data: DataSplits) -> CheckResult:
    """Samples of val or test that also occur, byte for byte, in train (or test samples in val)."""
    held = [split for split in HELD_OUT if split in data.splits]
    if not held:
        return CheckResult("train/val/test duplicates", "skip", "no val or test split to compare with train")
    hashes = {split: _sample_hashes(data.splits[split][0]) for split in ("train", *held)}
    if None in hashes.values():
        return CheckResult("train/val/test duplicates", "skip", "samples in shards are not read in full here")
    first_at = {split: {} for split in hashes}  # digest -> its first index in the split
    for split, digests in hashes.items():
        for index, digest in enumerate(digests):
            first_at[split].setdefault(digest, index)
    pairs = [(split, "train") for split in held] + ([("test", "val")] if len(held) == 2 else [])
    found, values, worst = [], {}, 0.0
    for split, reference in pairs:
        matches = [(index, first_at[reference][digest]) for index, digest in enumerate(hashes[split])
                   if digest in first_at[reference]]
        share = len(matches) / len(hashes[split])
        values[f"{split}_in_{reference}"] = {"count": len(matches), "of": len(hashes[split]),
                                             "examples": matches[:EXAMPLES]}
        if matches:
            worst = max(worst, share)
            found.append(f"{split}: {len(matches)} of {len(hashes[split])} ({share:.1%}) also in {reference}, e.g. "
                         + ", ".join(f"{split}[{i}] = {reference}[{j}]" for i, j in matches[:EXAMPLES]))
    if not found:
        return CheckResult("train/val/test duplicates", "pass", "no sample of "
                           + " or ".join(held) + " occurs in train" + (", none of test in val" if len(held) == 2
                                                                       else ""), values=values)
    return CheckResult("train/val/test duplicates", "fail" if worst >= LEAK_LIMIT else "warn", "; ".join(found),
                       "remove from the held-out splits the samples that also occur in train (deduplicate before "
                       "splitting): scores on leaked samples overstate the model", values)


def constant_features(data: DataSplits) -> CheckResult:
    """Features (image channels; features of each step) with one value in every training sample."""
    x = data.splits["train"][0]
    stored = stored_samples(x)
    if stored is None:
        return CheckResult("constant features", "skip", "images streamed from disk are not read in full here")
    if not isinstance(x, Inputs) and not stored.is_floating_point():
        return CheckResult("constant features", "skip", "token ids, not features")
    dims = stored.dim() - 1  # of one sample
    what, axis = {1: ("feature", 1), 2: ("feature", 2), 3: ("channel", 1)}.get(dims, ("feature", 1))
    others = [d for d in range(stored.dim()) if d != axis]
    constant = (stored.amax(dim=others) == stored.amin(dim=others)).cpu()  # (features,)
    count, total = int(constant.sum()), len(constant)
    values = {"constant": constant.nonzero().flatten().tolist(), "of": total}
    if not count:
        return CheckResult("constant features", "pass", f"all {total} {what}s vary" if total > 1
                           else f"the {what} varies")
    shown = ", ".join(map(str, values["constant"][:10])) + (", ..." if count > 10 else "")
    return CheckResult("constant features", "warn", f"{count} of {total} {what}s have one value in every training "
                       f"sample ({what} {shown})",
                       f"drop them, or check how the data is built: a constant {what} carries no information"
                       + (" (a constant image channel often means a conversion bug)" if what == "channel" else ""),
                       values)


def data_checks(data: DataSplits) -> list[CheckResult]:
    return [non_finite_values(data), labels_in_range(data), class_balance(data), leaked_duplicates(data),
            constant_features(data)]
