"""``CausalConv1d`` and ``Delay``: frame convolutions with ring-buffer state."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.nn.inference import uses_kernels
from streamlmu.nn.linear import KernelWeights, linear_rows
from streamlmu.nn.norm import FrameBatchNorm
from streamlmu.stream import StreamModule, check_input, feature_frame, register_state, step_by_forward


@register_state
class BufferState(NamedTuple):
    """The last frames seen: ``(batch, frames, channels)``, oldest first."""

    buffer: Tensor


def _with_history(x: Tensor, state: BufferState | None, frames: int, name: str) -> Tensor:
    """``cat(state.buffer, x)`` along time, after checking the state."""
    batch, channels = x.shape[0], x.shape[2]
    if state is None:
        history = x.new_zeros(batch, frames, channels)
    else:
        if type(state) is not BufferState:
            raise TypeError(f"state must be a BufferState from {name}.init_state (got {type(state).__name__})")
        history = state.buffer
        if history.shape != (batch, frames, channels):
            raise ValueError(f"state.buffer must have shape (batch, frames, channels)=({batch}, {frames}, "
                             f"{channels}) (got {tuple(history.shape)})")
    return torch.cat([history.to(x.dtype), x], dim=1)


class CausalConv1d(StreamModule):
    """1-D convolution over time that never waits for the future beyond ``lookahead``.

    Output frame t combines input frames ``t - kernel_size + 1 .. t``: with
    ``lookahead = L`` this is the centred convolution of frame ``t - L``
    (``L = 1``, ``kernel_size = 3`` is ``Conv1d(padding=1)`` delayed by one
    frame), so ``latency_frames = L``. The state holds the last
    ``kernel_size - 1`` input frames (zeros at the start, like zero padding).

    Without autograd on CPU the frames go through the row-exact dense kernel,
    so ``step`` and any chunking agree bit for bit.

    Shapes:
        forward: x ``(batch, time, in_channels)`` -> ``(batch, time, out_channels)``
        state:   ``BufferState(buffer=(batch, kernel_size - 1, in_channels))``
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 lookahead: int = 0):
        super().__init__()
        if kernel_size < 1 or not 0 <= lookahead < kernel_size:
            raise ValueError(f"need kernel_size >= 1 and 0 <= lookahead < kernel_size "
                             f"(got kernel_size={kernel_size}, lookahead={lookahead})")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.input_frame, self.output_frame = feature_frame(in_channels), feature_frame(out_channels)
        self.latency_frames = lookahead
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1.0 / math.sqrt(in_channels * kernel_size)  # nn.Conv1d's default initialisation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
        self._kernel_weights = KernelWeights()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"lookahead={self.latency_frames}, bias={self.bias is not None}")

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> BufferState:
        return BufferState(torch.zeros(batch_size, self.kernel_size - 1, self.in_channels, dtype=dtype, device=device))

    def forward(self, x: Tensor, state: BufferState | None = None,
                bn: FrameBatchNorm | None = None) -> tuple[Tensor, BufferState]:
        """``bn`` (optional) follows the convolution; in eval mode with the kernel it is folded in."""
        check_input(x, 3, self.in_channels)
        k, time = self.kernel_size, x.shape[1]
        padded = _with_history(x, state, k - 1, "CausalConv1d")          # (B, k-1+T, C_in)
        if time == 0:
            return x.new_zeros(x.shape[0], 0, self.out_channels), BufferState(padded)
        if uses_kernels(x, self.weight) and (bn is None or not bn.training):
            windows = padded.unfold(1, k, 1)                              # (B, T, C_in, k)
            windows = windows.transpose(-1, -2).reshape(x.shape[0], time, k * self.in_channels)
            y = linear_rows(windows, *self.kernel_weights(x.dtype, bn))
        else:
            y = F.conv1d(padded.transpose(1, 2), self.weight, self.bias).transpose(1, 2)
            y = y if bn is None else bn(y)
        return y, BufferState(padded[:, padded.shape[1] - (k - 1):])

    def kernel_weights(self, dtype: torch.dtype = torch.float32,
                       bn: FrameBatchNorm | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(wT (kernel_size * in, out), b (out,))`` over windows ordered oldest frame first."""
        return self._kernel_weights.get(self.weight.permute(0, 2, 1), self.bias, dtype, bn)

    def step(self, x: Tensor, state: BufferState) -> tuple[Tensor, BufferState]:
        """One frame: x ``(batch, in_channels)`` -> ``(batch, out_channels)``."""
        return step_by_forward(self, x, state, self.in_channels)


class Delay(StreamModule):
    """Output frame t is input frame ``t - frames`` (zeros before the start).

    Shapes: ``(batch, time, channels)`` -> same; state ``BufferState((batch, frames, channels))``.
    """

    def __init__(self, channels: int, frames: int):
        super().__init__()
        if frames < 0:
            raise ValueError(f"frames must be >= 0 (got {frames})")
        self.channels, self.frames = channels, frames
        self.input_frame = self.output_frame = feature_frame(channels)
        self.latency_frames = frames

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> BufferState:
        return BufferState(torch.zeros(batch_size, self.frames, self.channels, dtype=dtype, device=device))

    def forward(self, x: Tensor, state: BufferState | None = None) -> tuple[Tensor, BufferState]:
        check_input(x, 3, self.channels)
        padded = _with_history(x, state, self.frames, "Delay")
        return padded[:, :x.shape[1]], BufferState(padded[:, x.shape[1]:])

    def step(self, x: Tensor, state: BufferState) -> tuple[Tensor, BufferState]:
        return step_by_forward(self, x, state, self.channels)
