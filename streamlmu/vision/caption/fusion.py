"""The fusion model: a small BERT over concept tokens, visual grid tokens and the caption so far.

    fusion = FusionModel(FusionConfig(), vocab_size=V, grid_channels=C, grid_cells=h * w)
    out = fusion(concepts (B, K) ids, grid (B, C, h, w), words (B, T) ids)
    out.logits (heads, B, T, V); out.hidden [(B, L, hidden)] * (layers + 1); out.attentions [(B, heads, L, L)]

The sequence is ``[concepts | grid cells | words]`` (``L = K + h·w + T``); concepts and grid cells attend to each
other only, each word to every concept and cell and to the words before it (a prefix language model, as
UniLM-style captioners decode). ``FusionConfig()`` is TinyBERT's 4 layers of 312 (LightCap's student); the
next word comes from ``prediction_heads`` parallel linear heads whose probabilities are averaged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class FusionConfig:
    hidden: int = 312
    layers: int = 4
    attention_heads: int = 12
    intermediate: int = 1200
    max_words: int = 22                 # <bos>, 20 words, <eos>
    prediction_heads: int = 3
    dropout: float = 0.1

    @classmethod
    def teacher(cls) -> "FusionConfig":
        """A larger fusion model to distil from: 7 layers of 512, one head (the student has under a quarter of its
        parameters)."""
        return cls(hidden=512, layers=7, attention_heads=8, intermediate=2048, prediction_heads=1)


class FusionOutput(NamedTuple):
    """``logits (heads, B, T, V)`` per prediction head, ``hidden`` every layer's ``(B, L, hidden)`` (embeddings
    first), ``attentions`` every layer's ``(B, attention_heads, L, L)`` (empty unless asked for)."""

    logits: Tensor
    hidden: list[Tensor]
    attentions: list[Tensor]


class FusionLayer(nn.Module):
    """A post-norm transformer layer (BERT's) that can return its attention probabilities."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.attention = nn.MultiheadAttention(cfg.hidden, cfg.attention_heads, dropout=cfg.dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.hidden), nn.LayerNorm(cfg.hidden)
        self.feed = nn.Sequential(nn.Linear(cfg.hidden, cfg.intermediate), nn.GELU(),
                                  nn.Linear(cfg.intermediate, cfg.hidden))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, blocked: Tensor, attention: bool = False) -> tuple[Tensor, Tensor | None]:
        y, weights = self.attention(x, x, x, attn_mask=blocked, need_weights=attention, average_attn_weights=False)
        x = self.norm1(x + self.dropout(y))
        return self.norm2(x + self.dropout(self.feed(x))), weights


def prefix_mask(prefix: int, words: int, device: torch.device | None = None) -> Tensor:
    """``(L, L)`` bool, True where attention is blocked: the prefix sees itself, word ``t`` the prefix and words
    ``0..t``."""
    total = prefix + words
    blocked = torch.zeros(total, total, dtype=torch.bool, device=device)
    blocked[:prefix, prefix:] = True
    blocked[prefix:, prefix:] = torch.ones(words, words, dtype=torch.bool, device=device).triu(1)
    return blocked


class FusionModel(nn.Module):
    def __init__(self, cfg: FusionConfig, vocab_size: int, grid_channels: int, grid_cells: int):
        super().__init__()
        self.cfg, self.vocab_size, self.grid_cells = cfg, vocab_size, grid_cells
        self.words = nn.Embedding(vocab_size, cfg.hidden)      # shared by concepts and caption words
        self.grid = nn.Sequential(nn.Linear(grid_channels, cfg.hidden), nn.LayerNorm(cfg.hidden))
        self.cells = nn.Parameter(torch.zeros(grid_cells, cfg.hidden))
        self.positions = nn.Embedding(cfg.max_words, cfg.hidden)
        self.kinds = nn.Embedding(3, cfg.hidden)               # concept, grid cell, word
        self.norm, self.dropout = nn.LayerNorm(cfg.hidden), nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(FusionLayer(cfg) for _ in range(cfg.layers))
        self.heads = nn.ModuleList(nn.Linear(cfg.hidden, vocab_size) for _ in range(cfg.prediction_heads))
        nn.init.normal_(self.cells, std=0.02)

    def forward(self, concepts: Tensor, grid: Tensor, words: Tensor, attentions: bool = False) -> FusionOutput:
        batch, cells = grid.shape[0], grid.shape[2] * grid.shape[3]
        if cells != self.grid_cells or words.shape[1] > self.cfg.max_words:
            raise ValueError(f"the fusion model takes {self.grid_cells} grid cells and up to {self.cfg.max_words} "
                             f"words (got {cells} and {words.shape[1]})")
        if words.numel() and (int(words.min()) < 0 or int(words.max()) >= self.vocab_size):
            raise ValueError(f"word ids must be in [0, {self.vocab_size}) (got {int(words.min())}..{int(words.max())})")
        k, t = concepts.shape[1], words.shape[1]
        parts = [self.words(concepts) + self.kinds.weight[0],
                 self.grid(grid.flatten(2).transpose(1, 2)) + self.cells + self.kinds.weight[1],
                 self.words(words) + self.positions.weight[:t] + self.kinds.weight[2]]
        x = self.dropout(self.norm(torch.cat(parts, dim=1)))
        blocked = prefix_mask(k + cells, t, x.device)
        hidden, maps = [x], []
        for layer in self.layers:
            x, weights = layer(x, blocked, attentions)
            hidden.append(x)
            if attentions:
                maps.append(weights)
        last = x[:, k + cells:]
        logits = torch.stack([head(last) for head in self.heads]) if t else x.new_zeros(
            len(self.heads), batch, 0, self.vocab_size)
        return FusionOutput(logits, hidden, maps)

    @staticmethod
    def log_probs(logits: Tensor) -> Tensor:
        """The heads' ensemble: log of the mean of their softmax, ``(heads, ..., V) -> (..., V)``."""
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - torch.log(torch.tensor(float(len(logits))))
