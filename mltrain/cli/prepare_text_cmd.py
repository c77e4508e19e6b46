from __future__ import annotations

from pathlib import Path

import typer

from .. import collector
from .errors import exit_codes


def prepare_text(
    corpus: list[Path] = typer.Argument(..., metavar="CORPUS...", help="Text files, or folders of them (.txt, "
                                        ".md, .text), UTF-8.", show_default=False),
    tokenizer: str = typer.Option("bpe", "--tokenizer", metavar="bpe|PATH", help="bpe: learn a byte-level BPE "
                                  "of --vocab-size tokens from the corpus; or the path of a tokenizer.json."),
    vocab_size: int = typer.Option(8192, "--vocab-size", min=257, help="Tokens a bpe tokenizer learns."),
    out: Path = typer.Option(..., "--out", help="The folder to write train.bin, val.bin and tokenizer.json to.",
                             show_default=False),
    val_fraction: float = typer.Option(0.05, "--val-fraction", help="Of every piece of the corpus, this last "
                                       "part goes to val.bin."),
) -> None:
    """Tokenise a text corpus into the token files `dataset: tokens` trains from.

    Writes OUT/train.bin and OUT/val.bin (uint16 token ids, uint32 above 65,536 tokens) and
    OUT/tokenizer.json, encoding on every core; prints tokens per second.

    Example: mltrain prepare-text books/ --tokenizer bpe --vocab-size 8192 --out data/books
    """
    collector.resume()  # it builds no learner
    with exit_codes(False):
        from ..console import counting
        from ..prepare_text import corpus_files, prepare_text as prepare

        files = corpus_files(corpus)
        total = sum(file.stat().st_size for file in files)
        with counting(total, "tokenising (characters)") as advance:
            done = [0]

            def progress(characters: int, tokens: int) -> None:
                advance(characters - done[0])
                done[0] = characters

            result = prepare(files, tokenizer, vocab_size, out, val_fraction, progress)
    tokens = result.train_tokens + result.val_tokens
    rate = tokens / result.seconds if result.seconds > 0 else 0.0
    typer.echo(f"{result.characters:,} characters -> {result.train_tokens:,} train and {result.val_tokens:,} val "
               f"tokens (vocabulary {result.vocab_size:,}) in {result.seconds:.1f} s: {rate:,.0f} tokens/s; "
               f"written to {out}")
