"""`mltrain prepare-text`: text files (or folders of them) tokenised into the token corpus that
`dataset: tokens` reads: train.bin and val.bin (uint16 ids up to 65,536 tokens, uint32 above)
and the tokenizer.json that made them.

The corpus is read in pieces of about PIECE_CHARS characters (a file's lines, never split
inside one); the last `val_fraction` of each piece's tokens go to val.bin, so validation samples
the whole corpus, and the rest to train.bin. Pieces are encoded a batch at a time by the tokenizers
library, which spreads a batch over every core; only a batch is ever in memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .data.tokenizer import SubwordTokenizer, load_tokenizer_file, train_bpe
from .errors import UserError
from .run_dir import write_atomically

PIECE_CHARS = 1 << 16  # characters a piece holds (about 64 KB)
BATCH_PIECES = 64  # pieces encoded at once
TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass
class Prepared:
    train_tokens: int
    val_tokens: int
    characters: int
    seconds: float  # encoding and writing, after the tokenizer is ready
    vocab_size: int


def corpus_files(inputs: list[Path]) -> list[Path]:
    """The files named, and the text files (.txt, .md, .text) under the folders named, sorted."""
    files = []
    for path in inputs:
        if path.is_dir():
            found = sorted(file for file in path.rglob("*") if file.is_file() and file.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise UserError(f"CORPUS {path}: a folder with no text files ({', '.join(TEXT_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"CORPUS {path}: no such file or folder")
    return files


def pieces(files: list[Path]) -> Iterator[str]:
    """The corpus in pieces of about PIECE_CHARS characters, file after file."""
    for file in files:
        try:
            with open(file, encoding="utf-8") as handle:
                piece: list[str] = []
                size = 0
                for line in handle:
                    piece.append(line)
                    size += len(line)
                    if size >= PIECE_CHARS:
                        yield "".join(piece)
                        piece, size = [], 0
                if piece:
                    yield "".join(piece)
        except UnicodeDecodeError as error:
            raise UserError(f"CORPUS {file}: not UTF-8 text (invalid byte at offset {error.start}); convert it to "
                            "UTF-8 first") from None


def tokenizer_for(name: str, vocab_size: int, files: list[Path]) -> SubwordTokenizer:
    if name == "bpe":
        return train_bpe(pieces(files), vocab_size)
    if name == "char":
        raise UserError("--tokenizer char: a character model reads its text directly (data.dataset: text); "
                        "prepare-text writes subword token files: give bpe or a tokenizer.json")
    return load_tokenizer_file(Path(name), "--tokenizer")


def prepare_text(files: list[Path], tokenizer_name: str, vocab_size: int, out: Path, val_fraction: float,
                 progress: Callable[[int, int], None] = lambda characters, tokens: None) -> Prepared:
    """Write out/train.bin, out/val.bin and out/tokenizer.json from `files` (as `corpus_files`
    lists them); `progress(characters, tokens)` is called after each batch with the totals so far."""
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction}: give a fraction between 0 and 1, e.g. 0.05")
    tokenizer = tokenizer_for(tokenizer_name, vocab_size, files)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    out.mkdir(parents=True, exist_ok=True)
    counts = {"train": 0, "val": 0}
    characters, started = 0, time.perf_counter()
    with open(out / "train.bin.partial", "wb") as train, open(out / "val.bin.partial", "wb") as val:
        written = {"train": train, "val": val}
        batch: list[str] = []
        for piece in pieces(files):
            batch.append(piece)
            if len(batch) == BATCH_PIECES:
                characters += _write(tokenizer, batch, val_fraction, written, counts, dtype)
                batch = []
                progress(characters, counts["train"] + counts["val"])
        characters += _write(tokenizer, batch, val_fraction, written, counts, dtype)
        progress(characters, counts["train"] + counts["val"])
    if not counts["train"] or not counts["val"]:
        raise UserError(f"CORPUS: too small to hold out a val part ({characters} characters); give more text")
    for name in ("train", "val"):
        (out / f"{name}.bin.partial").replace(out / f"{name}.bin")
    write_atomically(out / "tokenizer.json", tokenizer.json)
    return Prepared(counts["train"], counts["val"], characters, time.perf_counter() - started, tokenizer.vocab_size)


def _write(tokenizer: SubwordTokenizer, batch: list[str], val_fraction: float, files: dict,
           counts: dict[str, int], dtype: type) -> int:
    """Encode a batch of pieces and append each piece's tokens to train.bin, its last
    `val_fraction` to val.bin; the batch's characters."""
    for ids in tokenizer.encode_batch(batch):
        cut = len(ids) - round(len(ids) * val_fraction)
        for split, part in (("train", ids[:cut]), ("val", ids[cut:])):
            np.asarray(part, dtype=dtype).tofile(files[split])
            counts[split] += len(part)
    return sum(map(len, batch))
