from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import exit_codes
from .options import TRUST_CODE


def sample(
    target: Path = typer.Argument(..., metavar="RUN_DIR_OR_CKPT", help="A run directory (uses best.pt, "
                                  "else last.pt) or a .pt checkpoint of a language model.", show_default=False),
    prompt: str = typer.Option(..., "--prompt", help="Text to continue; a character tokenizer's model "
                               "must have every character in its vocabulary.", show_default=False),
    tokens: int = typer.Option(..., "--tokens", min=0, help="Tokens to generate (characters, for a character "
                               "tokenizer).", show_default=False),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Divides the logits: below 1 is "
                                      "more conservative, 0 always takes the most likely token."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Draw only from the K most likely "
                                        "tokens."),
    seed: int = typer.Option(0, "--seed", help="Seed of the draws: the same seed gives the same text."),
    trust_code: bool = TRUST_CODE,
) -> None:
    """Generate text with any language model run (gpt, an hf/ causal language model, or your own, trained on the
    text or tokens dataset): prints the prompt, then its continuation.

    Needs only the checkpoint (its config, tokenizer and an hf/ model's config.json), not the training text.

    Example: mltrain sample runs/text_gpt-20260101-120000 --prompt "mltrain " --tokens 200 --top-k 10
    """
    with exit_codes(trust_code):
        from ..sample import sample_text

        text = sample_text(target, prompt, tokens, temperature, top_k, seed)
    typer.echo(text)
