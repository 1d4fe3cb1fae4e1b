"""LMUFormer and Spiking LMUFormer (Liu et al., arXiv 2402.04882) as causal stream operators.

Both models map 128-mel filterbank frames to class logits, one prediction per
frame from the running mean of the features seen so far::

    embedding   4 convolutions (k=3) over time, then x + conv_rpe(x)
    block       x + LMU(x)       u = f(W_u x); m = Legendre memory of u; h = f(W_h [m; x]); 1x1 conv + BN
                x + ConvFFN(x)   1x1 conv (dim -> ffn_ratio*dim) and back, with BN
    head        Linear on the running mean over frames

``LMUFormer`` uses ReLU / GELU and BatchNorm after each layer (the official
``lmu_rnn_conv1d``); ``SpikingLMUFormer`` puts BatchNorm + LIF neurons before
each layer (the official membrane-shortcut ``slmu_rnn_ms_conv1d``). The
parameter counts equal the official models' (1,621,796 and 1,689,894 with the
``paper`` presets).

Causal by default: every convolution sees the past only and keeps its last
frames in the state. ``lookahead=1`` lets each of the 5 convolutions see one
frame ahead, the official non-causal models' receptive field, at a latency of
5 frames: output frame t then belongs to input frame ``t - latency_frames``.
Frames before the latency has elapsed are held at zero at the input of every
stateful layer, exactly as the official zero padding, and are left out of the
running mean.

Shapes:
    forward: x ``(batch, time, in_features)`` -> logits ``(batch, time, num_classes)``
    step:    x ``(batch, in_features)`` -> logits ``(batch, num_classes)``
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.engine import DEFAULT_BLAS_MIN_BATCH, ProgramBuilder, Slot, StreamRunner
from streamlmu.nn.conv import BufferState, CausalConv1d, Delay
from streamlmu.nn.inference import full_precision
from streamlmu.nn.lif import LIF, LIFState
from streamlmu.nn.linear import FrameLinear
from streamlmu.nn.memory import LMUMemory, LMUMemoryState
from streamlmu.nn.norm import FrameBatchNorm
from streamlmu.stream import StreamModule, check_finite, check_input, feature_frame, register_state, step_by_forward

PRESETS: dict[str, dict] = {
    # The paper's SCv2-35 models; the spiking one doubles the memory order.
    "paper": dict(in_features=128, dim=256, order=256, theta=128.0, ffn_ratio=4, depth=1, num_classes=35),
    # <= 100k parameters, for tests and quick training.
    "tiny": dict(in_features=128, dim=48, order=64, theta=128.0, ffn_ratio=4, depth=1, num_classes=35),
}


@dataclass(frozen=True)
class LMUFormerConfig:
    """Architecture of an (optionally spiking) LMUFormer.

    ``lookahead`` is the future frames each of the ``conv_layers + 1``
    embedding convolutions sees (0: causal; 1: the official models).
    """

    in_features: int = 128
    dim: int = 256
    order: int = 256
    theta: float = 128.0
    ffn_ratio: int = 4
    depth: int = 1
    num_classes: int = 35
    conv_layers: int = 4
    kernel_size: int = 3
    lookahead: int = 0
    spiking: bool = False

    @classmethod
    def preset(cls, name: str, spiking: bool = False, **overrides) -> "LMUFormerConfig":
        """``"paper"`` or ``"tiny"``; the spiking variant doubles ``order``."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} (got {name!r})")
        values = dict(PRESETS[name], spiking=spiking)
        if spiking:
            values["order"] *= 2
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict:
        return asdict(self)


@register_state
class LMUFormerState(NamedTuple):
    """Everything a stream carries between frames (batch first in every tensor)."""

    feature_sum: Tensor                  # (B, dim): sum of the valid frames' features
    valid_frames: Tensor                 # (B,): how many frames entered that sum
    convs: tuple[BufferState, ...]       # embedding convolutions, then the positional one
    skip: BufferState                    # the residual around the positional conv (lookahead frames)
    memories: tuple[LMUMemoryState, ...]  # one per block
    neurons: tuple[LIFState, ...]        # LIF membranes (spiking model; empty otherwise)
    frames: Tensor                       # (B,) int64: frames consumed since the start or a reset


class _Block(nn.Module):
    """One LMU block and one ConvFFN (their layers; the models wire them)."""

    def __init__(self, cfg: LMUFormerConfig):
        super().__init__()
        dim, hidden = cfg.dim, cfg.dim * cfg.ffn_ratio
        self.encoder = FrameLinear(dim, 1)                     # W_u
        self.memory = LMUMemory(1, cfg.order, cfg.theta, flatten=True)
        self.hidden = FrameLinear(cfg.order + dim, dim)        # W_h on [m; x]
        self.proj = FrameLinear(dim, dim)
        self.proj_bn = FrameBatchNorm(dim)
        self.fc1 = FrameLinear(dim, hidden)
        self.fc1_bn = FrameBatchNorm(hidden if not cfg.spiking else dim)
        self.fc2 = FrameLinear(hidden, dim)
        self.fc2_bn = FrameBatchNorm(dim if not cfg.spiking else hidden)
        if cfg.spiking:
            self.pre_bn = FrameBatchNorm(dim)
            self.encoder_bn = FrameBatchNorm(1)
            self.memory_bn = FrameBatchNorm(cfg.order)
            self.hidden_bn = FrameBatchNorm(dim)


class _Chunk:
    """The builder that runs a model's ``_frame`` eagerly on a chunk of ``time`` frames with torch.

    It takes each layer's state from ``state`` in the order the frame uses the layers (convolutions,
    memories and neurons each in order; the skip delay once) and collects their new states.
    """

    def __init__(self, model: "LMUFormerBase", state: LMUFormerState, time: int):
        self.model, self.frames, self.time = model, state.frames, time
        self._old = {"convs": iter(state.convs), "memories": iter(state.memories), "neurons": iter(state.neurons)}
        self._new: dict[str, list] = {"convs": [], "memories": [], "neurons": []}
        self._skip, self.skip = state.skip, None

    def _stateful(self, kind: str, layer: nn.Module, x: Tensor, **kwargs) -> Tensor:
        y, state = layer(x, next(self._old[kind]), **kwargs)
        self._new[kind].append(state)
        return y

    def states(self) -> dict:
        return dict(convs=tuple(self._new["convs"]), skip=self.skip, memories=tuple(self._new["memories"]),
                    neurons=tuple(self._new["neurons"]))

    def mask(self, x: Tensor, delay: int) -> Tensor:
        return self.model._mask(x, self.model._valid(self.frames, self.time, delay))

    def conv(self, x: Tensor, conv: CausalConv1d, bn: FrameBatchNorm | None = None) -> Tensor:
        return self._stateful("convs", conv, x, bn=bn)

    def memory(self, u: Tensor, memory: LMUMemory) -> Tensor:
        return self._stateful("memories", memory, u)

    def lif(self, v: Tensor, lif: LIF) -> Tensor:
        return self._stateful("neurons", lif, v)

    def delay(self, x: Tensor, frames: int) -> Tensor:
        y, self.skip = self.model.skip(x, self._skip)
        return y

    @staticmethod
    def linear(x: Tensor, layer: FrameLinear, bn: FrameBatchNorm | None = None) -> Tensor:
        return layer(x, bn)

    @staticmethod
    def batchnorm(x: Tensor, bn: FrameBatchNorm) -> Tensor:
        return bn(x)

    relu, gelu = staticmethod(F.relu), staticmethod(F.gelu)

    @staticmethod
    def add(a: Tensor, b: Tensor) -> Tensor:
        return a + b

    @staticmethod
    def concat(*parts: Tensor) -> Tensor:
        return torch.cat(parts, dim=-1)


class LMUFormerBase(StreamModule):
    """Embedding, blocks and running-mean head shared by both models."""

    def __init__(self, config: LMUFormerConfig):
        super().__init__()
        cfg = self.config = config
        if cfg.lookahead and cfg.lookahead >= cfg.kernel_size:
            raise ValueError(f"lookahead must be < kernel_size={cfg.kernel_size} (got {cfg.lookahead})")
        channels = [cfg.in_features] + [cfg.dim] * cfg.conv_layers
        self.convs = nn.ModuleList(
            [CausalConv1d(channels[i], cfg.dim, cfg.kernel_size, bias=False, lookahead=cfg.lookahead)
             for i in range(cfg.conv_layers)]
            + [CausalConv1d(cfg.dim, cfg.dim, cfg.kernel_size, bias=False, lookahead=cfg.lookahead)])
        self.skip = Delay(cfg.dim, cfg.lookahead)
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.depth)])
        self.head = FrameLinear(cfg.dim, cfg.num_classes)
        self.latency_frames = cfg.lookahead * (cfg.conv_layers + 1)
        self.input_frame, self.output_frame = feature_frame(cfg.in_features), feature_frame(cfg.num_classes)

    # ------------------------------------------------------------ state
    def _neuron_sizes(self) -> list[int]:
        return []

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LMUFormerState:
        kw = dict(dtype=dtype, device=device)
        return LMUFormerState(
            feature_sum=torch.zeros(batch_size, self.config.dim, **kw),
            valid_frames=torch.zeros(batch_size, **kw),
            convs=tuple(c.init_state(batch_size, **kw) for c in self.convs),
            skip=self.skip.init_state(batch_size, **kw),
            memories=tuple(b.memory.init_state(batch_size, **kw) for b in self.blocks),
            neurons=tuple(LIFState(torch.zeros(batch_size, n, **kw)) for n in self._neuron_sizes()),
            frames=torch.zeros(batch_size, dtype=torch.int64, device=device))

    def _check_state(self, state: object, batch: int) -> LMUFormerState:
        if type(state) is not LMUFormerState:
            raise TypeError(f"state must be an LMUFormerState from {type(self).__name__}.init_state "
                            f"(got {type(state).__name__})")
        if state.feature_sum.shape != (batch, self.config.dim) or \
                len(state.neurons) != len(self._neuron_sizes()) or len(state.memories) != len(self.blocks):
            raise ValueError(f"state does not belong to this model with batch {batch}: expected feature_sum "
                             f"(batch, dim)=({batch}, {self.config.dim}), {len(self.blocks)} memories and "
                             f"{len(self._neuron_sizes())} neuron layers")
        return state

    # ------------------------------------------------------------ helpers
    def _valid(self, frames: Tensor, time: int, delay: int) -> Tensor | None:
        """``(B, T, 1)`` mask of the frames at least ``delay`` frames into the stream (None: all)."""
        if self.latency_frames == 0:
            return None
        index = frames[:, None] + torch.arange(time, device=frames.device)
        return (index >= delay).unsqueeze(-1)

    @staticmethod
    def _mask(x: Tensor, valid: Tensor | None) -> Tensor:
        return x if valid is None else x * valid.to(x.dtype)

    # ------------------------------------------------------------ API
    def forward(self, x: Tensor, state: LMUFormerState | None = None,
                pooling: str = "mean") -> tuple[Tensor, LMUFormerState]:
        """Logits per frame: ``(B, T, in) -> (B, T, classes)``; ``pooling="mean"``: the head on the mean features
        since the stream began (the model's answer), ``"frame"``: the head on each frame's features alone (what
        the spotter averages over a window; the engine's ``pooling="frame"``). The state moves the same."""
        if pooling not in ("mean", "frame"):
            raise ValueError(f"pooling must be 'mean' or 'frame' (got {pooling!r})")
        check_input(x, 3, self.config.in_features)
        check_finite(x)
        batch, time = x.shape[0], x.shape[1]
        state = self._check_state(self.init_state(batch, x.dtype, x.device) if state is None else state, batch)
        if time == 0:  # a front end may complete no frame in a chunk
            return x.new_zeros(batch, 0, self.config.num_classes), state
        features, valid, parts = self._features(x, state)
        features = self._mask(features, valid)
        weight = torch.ones(batch, time, 1, dtype=x.dtype, device=x.device) if valid is None else valid.to(x.dtype)
        with torch.autocast(x.device.type, enabled=False):  # the running mean and head in full precision
            sums = state.feature_sum.unsqueeze(1) + full_precision(features).cumsum(dim=1)
            counts = state.valid_frames[:, None, None] + weight.cumsum(dim=1)
            logits = self.head(sums / counts.clamp(min=1.0) if pooling == "mean" else full_precision(features))
        new = LMUFormerState(sums[:, -1], counts[:, -1, 0], frames=state.frames + time, **parts)
        return logits, new

    def step(self, x: Tensor, state: LMUFormerState) -> tuple[Tensor, LMUFormerState]:
        """One frame: x ``(batch, in_features)`` -> logits ``(batch, num_classes)``."""
        return step_by_forward(self, x, state, self.config.in_features)

    def classify(self, x: Tensor) -> Tensor:
        """Logits of whole clips (the mean over all frames): ``(batch, time, in) -> (batch, classes)``."""
        return self.forward(x)[0][:, -1]

    def streaming(self, blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH, pooling: str = "mean",
                  int8_min_batch: int | None = None) -> StreamRunner:
        """This (eval-mode) model compiled for the streaming engine; see :mod:`streamlmu.engine`."""
        return StreamRunner(self, blas_min_batch=blas_min_batch, pooling=pooling, int8_min_batch=int8_min_batch)

    def _frame(self, b: "ProgramBuilder | _Chunk", x: "Slot | Tensor") -> "Slot | Tensor":
        """The model's features of a frame, written once against a builder: the engine's
        :class:`~streamlmu.engine.ProgramBuilder` records it as ops, :class:`_Chunk` runs it on a chunk of
        frames with torch (training, ``forward`` and ``step``)."""
        raise NotImplementedError

    def _features(self, x: Tensor, state: LMUFormerState) -> tuple[Tensor, Tensor | None, dict]:
        """``_frame`` on a chunk ``(B, T, in)``: features ``(B, T, dim)``, the valid-frame mask, the new layer states."""
        chunk = _Chunk(self, state, x.shape[1])
        features = self._frame(chunk, x)
        cfg = self.config
        return features, self._valid(state.frames, x.shape[1], (cfg.conv_layers + 1) * cfg.lookahead), chunk.states()

    def _emit(self, b: ProgramBuilder, pooling: str = "mean") -> None:
        """The eval-mode frame as engine ops (``pooling="mean"`` mirrors ``forward`` with a one-frame chunk).

        ``pooling="frame"``: the head on this frame's features alone. The head is
        affine, so the mean of these logits over any span of frames is the
        logits of the mean features over that span (a sliding window for
        continuous keyword spotting).
        """
        cfg = self.config
        features = self._frame(b, b.input(cfg.in_features))
        if pooling == "frame":
            b.output(b.linear(features, self.head))
            return
        valid = (cfg.conv_layers + 1) * cfg.lookahead
        b.output(b.linear(b.running_mean(features, valid), self.head))  # the mean skips frames before ``valid``


class LMUFormer(LMUFormerBase):
    """The non-spiking LMUFormer (``LMUFormerConfig.preset("paper")``: 1,621,796 parameters).

    >>> model = LMUFormer(LMUFormerConfig.preset("tiny")).eval()
    >>> logits, state = model(torch.randn(2, 10, 128))
    >>> tuple(logits.shape)
    (2, 10, 35)
    """

    registry_name = "lmuformer"

    def __init__(self, config: LMUFormerConfig | None = None):
        config = config or LMUFormerConfig.preset("paper")
        if config.spiking:
            config = replace(config, spiking=False)
        super().__init__(config)
        self.conv_bns = nn.ModuleList([FrameBatchNorm(config.dim) for _ in range(config.conv_layers)])

    def _frame(self, b, x):
        L, n = self.config.lookahead, self.config.conv_layers
        h = x
        for i in range(n):
            h = b.batchnorm(b.relu(b.conv(b.mask(h, i * L), self.convs[i])), self.conv_bns[i])
        h = b.mask(h, n * L)
        x = b.add(b.delay(h, L), b.conv(h, self.convs[n]))
        valid = (n + 1) * L
        for block in self.blocks:
            u = b.mask(b.relu(b.linear(x, block.encoder)), valid)
            m = b.memory(u, block.memory)
            h = b.relu(b.linear(b.concat(m, x), block.hidden))
            x = b.add(x, b.linear(h, block.proj, block.proj_bn))
            z = b.gelu(b.linear(x, block.fc1, block.fc1_bn))
            x = b.add(x, b.relu(b.linear(z, block.fc2, block.fc2_bn)))
        return x


class SpikingLMUFormer(LMUFormerBase):
    """The Spiking LMUFormer (``LMUFormerConfig.preset("paper", spiking=True)``: 1,689,894 parameters).

    LIF neurons (tau 2, threshold 1; 0.5 before the LMU) turn every layer's
    input into spikes; their membranes are in the state.

    >>> model = SpikingLMUFormer(LMUFormerConfig.preset("tiny", spiking=True)).eval()
    >>> logits, state = model(torch.randn(2, 10, 128))
    >>> tuple(logits.shape), len(state.neurons)
    ((2, 10, 35), 11)
    """

    registry_name = "spiking-lmuformer"

    def __init__(self, config: LMUFormerConfig | None = None):
        config = config or LMUFormerConfig.preset("paper", spiking=True)
        if not config.spiking:
            config = replace(config, spiking=True)
        super().__init__(config)
        dim, n = config.dim, config.conv_layers
        self.conv_bns = nn.ModuleList([FrameBatchNorm(dim) for _ in range(n)])
        self.conv_lifs = nn.ModuleList([LIF(dim) for _ in range(n)])
        self.block_lifs = nn.ModuleList([
            nn.ModuleList([LIF(dim, threshold=0.5), LIF(1), LIF(config.order), LIF(dim),
                           LIF(dim), LIF(dim * config.ffn_ratio)])
            for _ in range(config.depth)])
        self.head_bn = FrameBatchNorm(dim)
        self.head_lif = LIF(dim)

    def _folded_conv_bn(self, i: int) -> FrameBatchNorm | None:
        """The BatchNorm that directly follows embedding conv ``i`` (the last one's raw output also feeds the skip)."""
        return self.conv_bns[i] if i < self.config.conv_layers - 1 else None

    def _lifs(self) -> list[LIF]:
        return [*self.conv_lifs, *(lif for group in self.block_lifs for lif in group), self.head_lif]

    def _neuron_sizes(self) -> list[int]:
        return [lif.features for lif in self._lifs()]

    def _frame(self, b, x):
        L, n = self.config.lookahead, self.config.conv_layers
        a = b.conv(x, self.convs[0], self._folded_conv_bn(0))
        for i in range(1, n + 1):
            normed = a if i < n else b.batchnorm(a, self.conv_bns[n - 1])
            spikes = b.lif(b.mask(normed, i * L), self.conv_lifs[i - 1])
            out = b.conv(spikes, self.convs[i], self._folded_conv_bn(i))
            if i < n:
                a = out
        x = b.add(b.delay(b.mask(a, n * L), L), out)
        valid = (n + 1) * L

        def fire(lif: LIF, v: Slot) -> Slot:
            return b.lif(b.mask(v, valid), lif)

        for block, lifs in zip(self.blocks, self.block_lifs):
            s_in = fire(lifs[0], b.batchnorm(x, block.pre_bn))
            u = fire(lifs[1], b.linear(s_in, block.encoder, block.encoder_bn))
            m = fire(lifs[2], b.batchnorm(b.memory(u, block.memory), block.memory_bn))
            h = fire(lifs[3], b.linear(b.concat(m, s_in), block.hidden, block.hidden_bn))
            x = b.add(x, b.linear(h, block.proj, block.proj_bn))
            z = b.linear(fire(lifs[4], b.batchnorm(x, block.fc1_bn)), block.fc1, block.fc2_bn)
            x = b.add(x, b.linear(fire(lifs[5], z), block.fc2))
        return fire(self.head_lif, b.batchnorm(x, self.head_bn))
