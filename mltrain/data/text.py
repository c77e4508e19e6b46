"""A UTF-8 text file as a character-level language-modelling set.

The vocabulary is the sorted set of the file's characters; it is kept in the data state (and so
in the checkpoint) so eval and `mltrain sample` encode exactly as training did. Each sample is a
window of `block_size` token ids; its targets are the same window shifted by one character.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, TOKENS
from ..schema import PositiveInt
from .dataset import DataSpec, DataSplits
from .files import regular_file
from .sections import FileDataConfig


class TextConfig(FileDataConfig):
    block_size: PositiveInt = 64
    """characters per sample, the language model's context length"""
    windows: PositiveInt = 2000
    """training windows per epoch, at evenly spaced offsets over the train text"""


def text_spec(vocabulary: str, block_size: int) -> DataSpec:
    """Samples (T,) token ids; targets (T,): the next character at each position."""
    return DataSpec((block_size,), len(vocabulary), tuple(vocabulary), target_shape=(block_size,))


def encode(text: str, vocabulary: str, what: str) -> torch.Tensor:
    """Token ids (len(text),) int64; characters outside the vocabulary are a UserError naming them."""
    index = {char: i for i, char in enumerate(vocabulary)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        shown = ", ".join(repr(char) for char in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise UserError(f"{what} has {len(unknown)} character(s) not in the model's vocabulary: {shown}; "
                        f"the vocabulary is {vocabulary!r}")
    return torch.tensor([index[char] for char in text], dtype=torch.int64)


def decode(tokens: list[int], vocabulary: str) -> str:
    return "".join(vocabulary[token] for token in tokens)


def _read(path: Path) -> str:
    regular_file(path, "data.path", "a UTF-8 text file")
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as error:
        raise UserError(f"data.path {path}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UserError(f"data.path {path}: not UTF-8 text (invalid byte at offset {error.start}); "
                        "convert it to UTF-8 first") from None


def _windows(tokens: torch.Tensor, offsets: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(windows, T) inputs starting at each offset, and the same windows one character later."""
    index = offsets[:, None] + torch.arange(block_size)
    return tokens[index], tokens[index + 1]


@DATASETS.register("text", "a UTF-8 file (data.path) as characters: samples (block_size,) token ids, targets "
                   "the next character at each position", TextConfig, tags={TOKENS, CLASSIFICATION})
def text(val_split: float, seed: int, path: str, block_size: int, windows: int,
         vocabulary: str | None = None) -> DataSplits:
    """The first (1 - val_split) of the file trains, the rest validates (split by position).

    Train: `windows` windows at evenly spaced offsets (all offsets if the text has fewer), so an
    epoch costs the same whatever the file's size. Val: consecutive non-overlapping windows, so
    every validation character is predicted once. `vocabulary` is the stored one when rebuilding.
    """
    file = Path(path)
    content = _read(file)
    vocabulary = vocabulary if vocabulary is not None else "".join(sorted(set(content)))
    tokens = encode(content, vocabulary, f"data.path {file}")
    val_chars = int(len(tokens) * val_split)
    train_tokens, val_tokens = tokens[:len(tokens) - val_chars], tokens[len(tokens) - val_chars:]
    needed = block_size + 1
    if len(train_tokens) < needed or (val_split > 0 and len(val_tokens) < needed):
        raise UserError(f"data.path {file}: too short: {len(tokens)} characters, but its train part and its "
                        f"val part (data.val_split {val_split}) each need at least data.block_size + 1 = "
                        f"{needed}; use a longer text or a smaller block_size")
    starts = len(train_tokens) - needed + 1  # possible train offsets
    offsets = torch.from_numpy(np.linspace(0, starts - 1, min(windows, starts)).round().astype(np.int64))
    splits = {"train": _windows(train_tokens, offsets, block_size)}
    if val_split > 0:
        splits["val"] = _windows(val_tokens, torch.arange(0, len(val_tokens) - block_size, block_size), block_size)
    return DataSplits(text_spec(vocabulary, block_size), splits, {"vocabulary": vocabulary})
