"""Which parameters a name in a config means, for `train.freeze` and `optimizer.groups`:
`backbone` (the parameters `model.weights` set), `head` (the others) or an fnmatch pattern on
dotted parameter names (`*.bias`, `layer4.*`)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Collection

BACKBONE, HEAD = "backbone", "head"
ROLES = (BACKBONE, HEAD)


def selects(pattern: str, name: str, backbone: Collection[str]) -> bool:
    if pattern == BACKBONE:
        return name in backbone
    if pattern == HEAD:
        return name not in backbone
    return fnmatchcase(name, pattern)


def example_names(names: list[str]) -> str:
    """A few parameter names, for a message about a pattern that matched none."""
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
