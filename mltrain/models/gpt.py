"""A decoder-only causal transformer language model, after nanoGPT.

Token + learned position embeddings -> `layers` pre-norm blocks (causal self-attention, MLP) ->
LayerNorm -> output layer sharing its weight with the token embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import activation as make_activation

INIT_STD = 0.02  # std of every Linear and Embedding weight at initialisation


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        # (B, T, 3C) -> three (B, heads, T, C / heads)
        q, k, v = self.qkv(x).view(batch, steps, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(attended.transpose(1, 2).reshape(batch, steps, width)))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model: int, heads: int, mlp_ratio: float, dropout: float, activation: str):
        super().__init__()
        mlp_width = round(mlp_ratio * d_model)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, heads, dropout)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_width), make_activation(activation),
            nn.Linear(mlp_width, d_model), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


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
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio, dropout, activation) for _ in range(layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocabulary, bias=False)
        self.output.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        residual_std = INIT_STD / math.sqrt(2 * layers)
        for block in self.blocks:
            nn.init.normal_(block.attention.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp[2].weight, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.output(self.final_norm(x))  # (B, T, vocabulary)
