"""Generate text from a language model trained on a text (gpt, a Hugging Face causal language model
hf/<name>, or your own architecture that reads (B, T) token ids, T up to the block size); needs
the checkpoint only, not the text file."""

from __future__ import annotations

from pathlib import Path

import torch

from .data.tokenizer import Tokenizer, from_state
from .errors import UserError
from .restore import restore

# Sampling is small; the CPU keeps a --seed reproducible from one machine to the next.
DEVICE = torch.device("cpu")


def _language_model(target: str | Path) -> tuple[torch.nn.Module, Tokenizer, int]:
    """The checkpoint's model in eval mode, the tokenizer it was trained with, its block size."""
    restored = restore(target, device=DEVICE.type)
    cfg, tokenizer = restored.cfg, from_state(restored.data_state)
    if tokenizer is None or not restored.spec.target_shape:  # a language model predicts a token at each position
        raise UserError(f"{restored.path}: holds a '{cfg.model.arch}' model trained on dataset '{cfg.data.dataset}'; "
                        "`mltrain sample` needs a language model trained on text (data.dataset: text or tokens)")
    return restored.model.eval(), tokenizer, restored.spec.sample_shape[0]


@torch.inference_mode()
def sample_text(target: str | Path, prompt: str, tokens: int, temperature: float = 1.0,
                top_k: int | None = None, seed: int = 0) -> str:
    """The prompt followed by `tokens` generated tokens (characters, for a character model). Each
    next token is drawn from softmax(logits / temperature), restricted to the top_k most likely
    if given; temperature 0 takes the most likely one. Deterministic for a given seed."""
    if not prompt:
        raise UserError("--prompt is empty; give at least one character to start from")
    if temperature < 0:
        raise UserError(f"--temperature {temperature}: must be 0 (most likely character) or more")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k {top_k}: must be at least 1")
    if not 0 <= seed < 2**63:
        raise UserError(f"--seed {seed}: must be at least 0 and below 2^63")
    model, tokenizer, block_size = _language_model(target)
    prompt_ids = tokenizer.encode(prompt, "--prompt")
    if not prompt_ids:
        raise UserError(f"--prompt {prompt!r}: the model's tokenizer makes no tokens of it; give some text")
    context = torch.tensor(prompt_ids, dtype=torch.int64, device=DEVICE)[None]  # (1, T)
    generator = torch.Generator(DEVICE).manual_seed(seed)
    for _ in range(tokens):
        window = context[:, -block_size:]
        logits = model(window).reshape(1, window.shape[1], tokenizer.vocab_size)[:, -1].float()  # (1, vocabulary)
        if temperature == 0:
            next_token = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth_largest, -torch.inf)
            next_token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
        context = torch.cat([context, next_token], dim=1)
    return prompt + tokenizer.decode(context[0, len(prompt_ids):].tolist())
