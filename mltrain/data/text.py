"""A UTF-8 text file as a language-modelling set, read as characters or as subword tokens.

`data.tokenizer: char` (the default): the vocabulary is the sorted set of the file's characters.
`bpe`: a byte-level BPE of `data.vocab_size` tokens trained on the training part of the text
(the `tokenizers` library), cached beside the file under its content's hash. A path: that
tokenizer.json, or the one in that folder (a Hugging Face model's, for `model.arch: hf/<folder>`).
The tokenizer is kept in the data state (and so in the checkpoint), so eval and `mltrain sample`
encode exactly as training did. Each sample is a window of `block_size` token ids; its targets
are the same window shifted by one token.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..registry import CLASSIFICATION, DATASETS, TOKENS
from ..run_dir import write_atomically
from ..schema import PositiveInt
from .dataset import DataSpec, DataSplits
from .files import regular_file
from .sections import FileDataConfig
from .tokenizer import CharTokenizer, Tokenizer, from_state, load_tokenizer_file, train_bpe


class TextConfig(FileDataConfig):
    block_size: PositiveInt = 64
    """tokens per sample, the language model's context length"""
    windows: PositiveInt = 2000
    """training windows per epoch, at evenly spaced offsets over the train text"""
    tokenizer: str = "char"
    """char (the text's characters) | bpe (a byte-level BPE of data.vocab_size tokens trained on the train text; mltrain[text]) | a tokenizer.json or a folder holding one (a Hugging Face model's)"""
    vocab_size: PositiveInt = 512
    """bpe: the tokens it learns (at least 257: the 256 bytes and one merge)"""


def text_spec(tokenizer: Tokenizer, block_size: int) -> DataSpec:
    """Samples (T,) token ids; targets (T,): the next token at each position. Characters are their
    own class names; subword tokens have none."""
    names = tuple(tokenizer.vocabulary) if isinstance(tokenizer, CharTokenizer) else ()
    return DataSpec((block_size,), tokenizer.vocab_size, names, target_shape=(block_size,))



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


@DATASETS.register("text", "a UTF-8 file (data.path) as characters or subword tokens (data.tokenizer): samples "
                   "(block_size,) token ids, targets the next token at each position", TextConfig,
                   tags={TOKENS, CLASSIFICATION})
def text(val_split: float, seed: int, path: str, block_size: int, windows: int, tokenizer: str = "char",
         vocab_size: int = 512, vocabulary: str | None = None, tokenizer_json: str | None = None) -> DataSplits:
    """The first (1 - val_split) of the file trains, the rest validates (split by position).

    Train: `windows` windows at evenly spaced offsets (all offsets if the text has fewer), so an
    epoch costs the same whatever the file's size. Val: consecutive non-overlapping windows, so
    every validation token is predicted once. `vocabulary` or `tokenizer_json` is the stored
    tokenizer when rebuilding.
    """
    file = Path(path)
    content = _read(file)
    val_chars = int(len(content) * val_split)
    train_text, val_text = content[:len(content) - val_chars], content[len(content) - val_chars:]
    chosen = from_state({"vocabulary": vocabulary, "tokenizer_json": tokenizer_json}) \
        or _tokenizer(tokenizer, vocab_size, file, train_text, content)
    encode = partial(_encoded, chosen)
    train_tokens, val_tokens = encode(train_text, f"data.path {file}"), encode(val_text, f"data.path {file}")
    needed = block_size + 1
    if len(train_tokens) < needed or (val_split > 0 and len(val_tokens) < needed):
        raise UserError(f"data.path {file}: too short: {len(train_tokens) + len(val_tokens)} tokens, but its train "
                        f"part and its val part (data.val_split {val_split}) each need at least data.block_size + 1 "
                        f"= {needed}; use a longer text or a smaller block_size")
    starts = len(train_tokens) - needed + 1  # possible train offsets
    offsets = torch.from_numpy(np.linspace(0, starts - 1, min(windows, starts)).round().astype(np.int64))
    splits = {"train": _windows(train_tokens, offsets, block_size)}
    if val_split > 0:
        splits["val"] = _windows(val_tokens, torch.arange(0, len(val_tokens) - block_size, block_size), block_size)
    return DataSplits(text_spec(chosen, block_size), splits, chosen.state())


def _encoded(tokenizer: Tokenizer, text: str, what: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, what), dtype=torch.int64)


def _tokenizer(name: str, vocab_size: int, file: Path, train_text: str, content: str) -> Tokenizer:
    """What data.tokenizer names: the file's characters, a BPE learned from the train text (cached
    beside the file), or a tokenizer.json."""
    if name == "char":
        return CharTokenizer.of(content)
    if name != "bpe":
        return load_tokenizer_file(Path(name), "data.tokenizer")
    digest = hashlib.sha256(train_text.encode("utf-8")).hexdigest()[:16]
    cached = file.with_name(f"{file.name}.bpe{vocab_size}-{digest}.json")
    if cached.is_file():
        return load_tokenizer_file(cached, "data.tokenizer (cached)")
    trained = train_bpe([train_text], vocab_size)
    with contextlib.suppress(OSError):  # a folder we may not write to: train again next time
        write_atomically(cached, trained.json)
    return trained
