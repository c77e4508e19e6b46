"""A decoder-only causal transformer language model, after nanoGPT.

Token + learned position embeddings -> `layers` pre-norm blocks (causal self-attention, MLP) ->
LayerNorm -> output layer sharing its weight with the token embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import ARCHITECTURES, TOKENS
from .layers import INIT_STD, AttentionConfig, Block


@ARCHITECTURES.register("gpt", "decoder-only causal transformer language model over tokens (nanoGPT-style)",
                        AttentionConfig, tags={TOKENS})
class GPT(nn.Module):
    """Reads (B, T) token ids, T <= block_size; returns next-token logits (B, T, vocabulary).

    `num_outputs` is the head's count per sample, block_size x vocabulary (one logit per token at
    each position), so the vocabulary size is num_outputs / block_size.

    Initialisation (nanoGPT, after GPT-2): every Linear and Embedding weight ~ N(0, 0.02), biases
    zero, LayerNorms at identity; the two projections that write into the residual stream
    (attention `proj`, the MLP's last Linear) use std 0.02 / sqrt(2 * layers), so the residual
    stream's variance stays about constant with depth. Tying the output layer to the token
    embedding keeps the initial logits small: the loss at step 0 is about ln(vocabulary).
    """

    def __init__(self, input_shape: tuple[int, ...], num_outputs: int, d_model: int, heads: int,
                 layers: int, mlp_ratio: float, dropout: float, activation: str):
        super().__init__()
        (self.block_size,) = input_shape
        vocabulary = num_outputs // self.block_size
        self.token_embedding = nn.Embedding(vocabulary, d_model)
        self.position_embedding = nn.Embedding(self.block_size, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio, dropout, activation, causal=True)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocabulary, bias=False)
        self.output.weight = self.token_embedding.weight
        for embedding in (self.token_embedding, self.position_embedding):  # the token one is the output too
            nn.init.normal_(embedding.weight, std=INIT_STD)
        for block in self.blocks:
            block.initialise(layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.output(self.final_norm(x))  # (B, T, vocabulary)
