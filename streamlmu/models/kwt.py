"""A causal Keyword-Transformer baseline (KWT, Berg et al., arXiv 2104.00769) that re-runs on every prefix.

The comparison point for the LMUFormer: a transformer over the same 128-mel
filterbank frames, with no recurrent state, so a stream has to re-run it on
the frames it has heard so far (up to a ``window`` of frames) at every hop.
Each frame is one token (KWT's time-domain patches)::

    tokens   Linear(in_features -> dim) + learned position (0 .. window-1)
    blocks   x + Attention(LN(x)) with a causal mask; x + MLP(LN(x))   (pre-norm)
    head     LN, mean over the window's tokens, Linear(dim -> num_classes)

KWT classifies from a class token; a causal model cannot (the token would
see nothing), so the head reads the mean of the tokens, as the LMUFormer's does.

The stream state holds the last ``window`` input frames. The output at frame
t is the model run on the frames ``max(0, t - window + 1) .. t``, positions
counted from the first of them: before the window fills, one causal pass over
a chunk yields every frame's output at once; after, each frame re-runs the
whole window (what a user of a non-streaming model does every hop).

Shapes:
    forward: x ``(batch, time, in_features)`` -> logits ``(batch, time, num_classes)``
    step:    x ``(batch, in_features)`` -> logits ``(batch, num_classes)``
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.stream import (StreamModule, check_finite, check_input, exporting, feature_frame, register_state,
                              step_by_forward)

KWT_PRESETS: dict[str, dict] = {
    # KWT-1's sizes (dim 64, one head, MLP 256, 12 blocks) over 128-frame windows.
    "paper": dict(in_features=128, dim=64, depth=12, heads=1, mlp_dim=256, window=128, num_classes=35),
    # <= 100k parameters, for tests and quick training.
    "tiny": dict(in_features=128, dim=48, depth=2, heads=2, mlp_dim=96, window=128, num_classes=35),
}

_WINDOWS_PER_PASS = 256  # windows stacked into one batched re-run once the window slides


@dataclass(frozen=True)
class KWTConfig:
    """Architecture of the causal KWT baseline; ``window`` is the most frames one run sees."""

    in_features: int = 128
    dim: int = 64
    depth: int = 12
    heads: int = 1
    mlp_dim: int = 256
    window: int = 128
    num_classes: int = 35

    @classmethod
    def preset(cls, name: str, **overrides) -> "KWTConfig":
        """``"paper"`` (KWT-1 sizes) or ``"tiny"``."""
        if name not in KWT_PRESETS:
            raise ValueError(f"preset must be one of {sorted(KWT_PRESETS)} (got {name!r})")
        return cls(**{**KWT_PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


@register_state
class KWTState(NamedTuple):
    """The frames a stream has heard (batch first)."""

    history: Tensor  # (B, window, in_features): the last frames, most recent last; zeros before the start
    frames: Tensor   # (B,) int64: frames consumed since the start or a reset


class _Block(nn.Module):
    """Pre-norm transformer block with causal multi-head self-attention: ``(N, L, dim) -> (N, L, dim)``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(n, length, 3, self.heads, dim // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(n, length, dim))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class KWT(StreamModule):
    """Causal KWT over filterbank frames, re-run on every prefix of its window.

    >>> model = KWT(KWTConfig.preset("tiny")).eval()
    >>> logits, state = model(torch.randn(2, 10, 128))
    >>> tuple(logits.shape), tuple(state.history.shape)
    ((2, 10, 35), (2, 128, 128))
    """

    latency_frames = 0
    registry_name = "kwt"

    def __init__(self, config: KWTConfig | None = None):
        super().__init__()
        cfg = self.config = config or KWTConfig.preset("paper")
        self.input_frame, self.output_frame = feature_frame(cfg.in_features), feature_frame(cfg.num_classes)
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim={cfg.dim} must be a multiple of heads={cfg.heads}")
        if cfg.window < 1:
            raise ValueError(f"window must be >= 1 frame (got {cfg.window})")
        self.embed = nn.Linear(cfg.in_features, cfg.dim)
        self.position = nn.Parameter(torch.randn(cfg.window, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(cfg.dim, cfg.heads, cfg.mlp_dim) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def run_macs(self, frames: int) -> dict[str, int]:
        """MACs of one run over ``frames`` frames (capped at the window), per layer.

        That run is what a stream pays for the frame at which it has heard ``frames`` frames;
        attention counts the causal pairs it needs (``n (n + 1) / 2``, each ``dim`` MACs for the
        score and ``dim`` for the weighted sum).
        """
        cfg = self.config
        n, d = min(frames, cfg.window), cfg.dim
        macs = {"embed": n * cfg.in_features * d}
        for i in range(cfg.depth):
            macs[f"blocks.{i}.qkv"] = n * d * 3 * d
            macs[f"blocks.{i}.attention"] = n * (n + 1) * d
            macs[f"blocks.{i}.out"] = n * d * d
            macs[f"blocks.{i}.fc1"] = n * d * cfg.mlp_dim
            macs[f"blocks.{i}.fc2"] = n * cfg.mlp_dim * d
        macs["head"] = d * cfg.num_classes
        return macs

    # ------------------------------------------------------------ state
    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> KWTState:
        cfg = self.config
        return KWTState(torch.zeros(batch_size, cfg.window, cfg.in_features, dtype=dtype, device=device),
                        torch.zeros(batch_size, dtype=torch.int64, device=device))

    def _check_state(self, state: object, x: Tensor) -> KWTState:
        if type(state) is not KWTState:
            raise TypeError(f"state must be a KWTState from KWT.init_state (got {type(state).__name__})")
        cfg, batch = self.config, x.shape[0]
        expected = (batch, cfg.window, cfg.in_features)
        if state.history.shape != expected or state.frames.shape != (batch,):
            raise ValueError(f"state does not belong to this model with batch {batch}: expected history "
                             f"(batch, window, in_features)={expected} and frames ({batch},), got "
                             f"{tuple(state.history.shape)} and {tuple(state.frames.shape)}")
        if state.history.dtype != x.dtype or state.history.device != x.device:
            raise TypeError(f"state.history must match the input's dtype and device ({x.dtype}, {x.device}); "
                            f"got ({state.history.dtype}, {state.history.device})")
        return state

    # ------------------------------------------------------------ model
    def encode(self, x: Tensor) -> Tensor:
        """Token features of runs that start at position 0: ``(N, L, in_features) -> (N, L, dim)``, L <= window.

        Causal: token ``i`` depends on tokens ``<= i`` only, so rows may be
        padded at the end with anything.
        """
        h = self.embed(x) + self.position[:x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, x: Tensor, state: KWTState | None = None) -> tuple[Tensor, KWTState]:
        cfg = self.config
        check_input(x, 3, cfg.in_features)
        check_finite(x)
        batch, time = x.shape[0], x.shape[1]
        state = self._check_state(self.init_state(batch, x.dtype, x.device) if state is None else state, x)
        if time == 0:
            return x.new_zeros(batch, 0, cfg.num_classes), state
        seq = torch.cat([state.history, x], dim=1)                          # (B, W+T, F)
        if not exporting() and bool((state.frames + time <= cfg.window).all()):  # ONNX: the general path
            mean = self._prefix_means(seq, state.frames, time)
        else:
            mean = self._window_means(seq, state.frames, time)
        return self.head(mean), KWTState(seq[:, -cfg.window:], state.frames + time)

    def step(self, x: Tensor, state: KWTState) -> tuple[Tensor, KWTState]:
        """One frame (a re-run over the window): x ``(batch, in_features)`` -> ``(batch, num_classes)``."""
        return step_by_forward(self, x, state, self.config.in_features)

    def classify(self, x: Tensor) -> Tensor:
        """Logits of whole clips (``time <= window``): ``(batch, time, in) -> (batch, classes)``."""
        return self.forward(x)[0][:, -1]

    # ------------------------------------------------------------ paths
    def _prefix_means(self, seq: Tensor, frames: Tensor, time: int) -> Tensor:
        """Every window still starts at its stream's first frame: one causal pass per stream.

        seq ``(B, W+T, F)``; frames ``(B,)`` heard before; -> mean token features ``(B, T, dim)``.
        """
        window = self.config.window
        heard = frames.clamp(max=window)
        length = int(heard.max()) + time
        # Row b: its stream's frames from the first one, then padding (clamped indices).
        index = (window - heard)[:, None] + torch.arange(length, device=seq.device)
        index = index.clamp(max=seq.shape[1] - 1)
        rows = seq.gather(1, index[..., None].expand(-1, -1, seq.shape[2]))
        sums = self.encode(rows).cumsum(dim=1)                               # (B, L, dim)
        last = heard[:, None] + torch.arange(time, device=seq.device)        # token of each output frame
        picked = sums.gather(1, last[..., None].expand(-1, -1, sums.shape[2]))
        return picked / (last + 1).unsqueeze(-1).to(seq.dtype)

    def _window_means(self, seq: Tensor, frames: Tensor, time: int) -> Tensor:
        """The general case: each output frame re-runs its own window (batched): ``-> (B, T, dim)``."""
        window = self.config.window
        t = torch.arange(time, device=seq.device)
        length = (frames[:, None] + t + 1).clamp(max=window)                 # (B, T) frames in each window
        start = window + t - length + 1                                      # index in seq of each window's first
        index = (start[..., None] + torch.arange(window, device=seq.device)).clamp(max=seq.shape[1] - 1)
        rows_of = torch.arange(seq.shape[0], device=seq.device)[:, None, None]  # sizes from tensors: ONNX's
        windows = seq[rows_of, index].flatten(0, 1)                           # (B*T, W, F)   batch axis
        ends = (length - 1).flatten()
        passes = [slice(None)] if exporting() else \
            [slice(i, i + _WINDOWS_PER_PASS) for i in range(0, windows.shape[0], _WINDOWS_PER_PASS)]
        means = []
        for part in passes:
            sums = self.encode(windows[part]).cumsum(dim=1)
            end = ends[part]
            means.append(sums[torch.arange(end.shape[0], device=seq.device), end] / (end + 1)[:, None].to(seq.dtype))
        return torch.cat(means).view(seq.shape[0], time, -1)
