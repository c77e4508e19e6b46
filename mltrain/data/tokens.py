"""A token corpus for language models (`dataset: tokens`): a folder with `train.bin` (and
`val.bin`), flat files of token ids, uint16 when the vocabulary has at most 65,536 tokens and
uint32 above (nanoGPT's format), and the `tokenizer.json` that made them.

The files are memory-mapped and never read whole: each epoch trains on `windows` windows of
`block_size` tokens at offsets drawn from (seed, epoch), so a corpus of billions of tokens costs
what its windows cost, and a resumed run draws exactly the windows it would have. Validation
reads `val_windows` non-overlapping windows spread evenly over val.bin, every time the same.
The tokenizer's JSON is kept in the data state, and so in every checkpoint.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, TOKENS
from ..schema import PositiveInt
from .dataset import DataSpec, DataSplits, global_batches, shard
from .files import regular_file
from .sections import FileDataConfig
from .stream import EpochPosition
from .tokenizer import vocabulary_size

PREVIEW_WINDOWS = 256  # training windows kept in memory for the checks (pre-flight, overfit-tiny)
UINT16_TOKENS = 2 ** 16


class TokensConfig(FileDataConfig):
    block_size: PositiveInt = 256
    """tokens per sample, the language model's context length"""
    windows: PositiveInt = 10_000
    """training windows per epoch, at offsets drawn from (seed, epoch) over train.bin"""
    val_windows: PositiveInt = 500
    """validation windows, non-overlapping and spread evenly over val.bin"""


def token_file(path: Path, vocab_size: int) -> np.ndarray:
    """The token ids of one .bin file, memory-mapped for random reads: without read-ahead, a
    window costs the pages it spans, not the hundreds of kilobytes around each one."""
    regular_file(path, "data.path", "a folder with train.bin (and val.bin) and tokenizer.json")
    dtype = np.dtype(np.uint16 if vocab_size <= UINT16_TOKENS else np.uint32)
    size = path.stat().st_size
    if size % dtype.itemsize or not size:
        raise UserError(f"data.path: {path} is {size} bytes, not a whole number (at least one) of {dtype.name} "
                        f"token ids (a vocabulary of {vocab_size} is stored as {dtype.name})")
    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):  # not on Windows
        mapped.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(mapped, dtype=dtype)


def windows_at(tokens: np.ndarray, offsets: np.ndarray, block_size: int,
               vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(offsets), block_size) int64 inputs starting at each offset, and the next token at each
    position. An id outside the vocabulary is a UserError naming its offset."""
    span = tokens[offsets[:, None] + np.arange(block_size + 1)].astype(np.int64)
    if span.max() >= vocab_size:
        window, position = np.argwhere(span >= vocab_size)[0]
        raise UserError(f"data.path: token {offsets[window] + position} of the token file is id "
                        f"{span[window, position]}, but tokenizer.json has {vocab_size} tokens; the file and the "
                        "tokenizer do not belong together")
    return torch.from_numpy(span[:, :-1].copy()), torch.from_numpy(span[:, 1:].copy())


class TokenWindows(EpochPosition):
    """The training stream: `windows` windows an epoch at offsets drawn from (seed, epoch), each
    global batch cut into one part per process, as in-memory splits are."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, block_size: int, windows: int, batch_size: int,
                 seed: int, device: torch.device, drop_last: bool = False):
        """`drop_last`: leave out an epoch's last global batch when it is smaller than the others."""
        super().__init__()
        self.tokens, self.vocab_size, self.block_size, self.windows = tokens, vocab_size, block_size, windows
        self.batch_size, self.seed, self.device, self.drop_last = batch_size, seed, device, drop_last

    def epoch_samples(self) -> int:
        return self.windows

    def micro_batches_in_epoch(self, world_size: int) -> int:
        return global_batches(self.windows, self.batch_size, world_size, self.drop_last)

    def offsets(self, epoch: int) -> np.ndarray:
        generator = np.random.default_rng([self.seed, epoch])
        return generator.integers(0, len(self.tokens) - self.block_size, self.windows)

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        self._serving(epoch)
        offsets = self.offsets(epoch)
        order, global_sizes = shard(torch.arange(self.served, self.windows), self.batch_size, world_size, rank,
                                    self.drop_last)
        for index, global_size in zip(order.split(self.batch_size), global_sizes):
            x, y = windows_at(self.tokens, offsets[index.numpy()], self.block_size, self.vocab_size)
            self.served += global_size  # before the yield: a checkpoint taken after this batch counts it
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), global_size

    def close(self) -> None:
        """Nothing to end: the memory map closes with the process."""


class StreamedTokens:
    """What DataSplits keeps of a token corpus's training split: how to stream it."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, block_size: int, windows: int,
                 device: torch.device = torch.device("cpu")):
        self.tokens, self.vocab_size, self.block_size = tokens, vocab_size, block_size
        self.windows, self.device = windows, device

    def samples(self) -> int:
        return self.windows

    def describe(self) -> str:
        return (f"train: {self.windows:,} windows an epoch drawn from {len(self.tokens):,} memory-mapped tokens "
                "(never read whole)")

    def stream(self, batch_size: int, seed: int, drop_last: bool = False) -> TokenWindows:
        return TokenWindows(self.tokens, self.vocab_size, self.block_size, self.windows, batch_size, seed, self.device,
                            drop_last)

    def limited(self, count: int) -> StreamedTokens:
        return StreamedTokens(self.tokens, self.vocab_size, self.block_size, min(count, self.windows), self.device)

    def with_augment(self, augment: None) -> StreamedTokens:
        assert augment is None, "token windows take no augmentation (TokensConfig has no augment key)"
        return self

    def to(self, device: torch.device) -> StreamedTokens:
        return StreamedTokens(self.tokens, self.vocab_size, self.block_size, self.windows, torch.device(device))


@DATASETS.register("tokens", "a token corpus (data.path: a folder with train.bin, val.bin and tokenizer.json, "
                   "nanoGPT's format): samples (block_size,) token ids drawn from the memory-mapped file",
                   TokensConfig, tags={TOKENS, CLASSIFICATION})
def tokens(val_split: float, seed: int, path: str, block_size: int, windows: int, val_windows: int,
           tokenizer_json: str | None = None) -> DataSplits:
    """`tokenizer_json` is the stored tokenizer.json when rebuilding for a checkpoint. Without
    val.bin the last data.val_split of train.bin validates."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"data.path {folder}: not a folder; give the folder with train.bin, val.bin and "
                        "tokenizer.json (`mltrain prepare-text` writes one)")
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_json is None:
        regular_file(tokenizer_file, "data.path", "a folder with tokenizer.json beside train.bin")
        tokenizer_json = tokenizer_file.read_text(encoding="utf-8")
    vocab_size = vocabulary_size(tokenizer_json, f"data.path: {tokenizer_file}")
    train = token_file(folder / "train.bin", vocab_size)
    val = token_file(folder / "val.bin", vocab_size) if (folder / "val.bin").exists() else None
    if val is None and val_split > 0:
        held = int(len(train) * val_split)
        train, val = train[:len(train) - held], train[len(train) - held:]
    for name, part in (("train", train), ("val", val)):
        if part is not None and len(part) < block_size + 1:
            raise UserError(f"data.path {folder}: its {name} tokens ({len(part)}) are fewer than data.block_size + 1 "
                            f"= {block_size + 1}; use more text or a smaller block_size")
    # Ids are checked as windows are read: the whole file never is.
    splits = {"train": windows_at(train, _spread(len(train), block_size, PREVIEW_WINDOWS), block_size, vocab_size)}
    if val is not None:
        splits["val"] = windows_at(val, _spread(len(val), block_size, val_windows), block_size, vocab_size)
    spec = DataSpec((block_size,), vocab_size, target_shape=(block_size,))
    return DataSplits(spec, splits, {"tokenizer_json": tokenizer_json},
                      StreamedTokens(train, vocab_size, block_size, windows))


def _spread(length: int, block_size: int, count: int) -> np.ndarray:
    """Offsets of up to `count` windows spread evenly over `length` tokens, consecutive when they fit."""
    starts = length - block_size  # possible offsets
    if count * block_size <= starts:
        step = (starts // count) // block_size * block_size or block_size
        return np.arange(count) * step
    return np.linspace(0, starts - 1, min(count, starts)).round().astype(np.int64)
