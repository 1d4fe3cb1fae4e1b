"""Streaming polyphase resampling: audio chunks of any size in, the same samples as resampling the whole signal out.

The filter is SciPy's ``resample_poly`` design (a Kaiser-windowed sinc,
beta 5, 10 zero crossings per side of the lower rate). Output sample ``j`` is
``scipy.signal.upfirdn(h, x, up, down)[j + delay]`` with ``delay`` the filter's
centre in output samples, so it lines up with input time to within one output
sample (and equals ``resample_poly`` on the whole signal to about 1e-6);
producing it waits for ``latency_samples`` input samples ahead. Equal rates
pass the audio through.

Shapes: ``(streams, samples)`` float in, ``(streams, new_samples)`` float32 out.
"""
from __future__ import annotations

from math import gcd
from typing import NamedTuple

import numpy as np
import torch
from scipy.signal import firwin
from torch import Tensor

from streamlmu.stream import SAMPLES, StreamModule, check_finite, register_state


def resample_filter(up: int, down: int) -> np.ndarray:
    """SciPy ``resample_poly``'s default anti-aliasing filter for ``up / down``, with its gain ``up``."""
    half = 10 * max(up, down)
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up


@register_state
class ResampleState(NamedTuple):
    """``history (B, taps)`` the last inputs (zeros before the start); ``consumed (B,)`` int64 inputs seen and
    ``next (B,)`` int64 the next upfirdn index to emit: a clock the streams of a batch share."""

    history: Tensor
    consumed: Tensor
    next: Tensor


class Resample(StreamModule):
    """Resample audio from ``orig_rate`` to ``new_rate`` Hz: ``(batch, samples) -> (batch, new_samples)``.

    A rate-changing stream operator (``step`` takes one sample and returns the ``(batch, n)`` samples it
    completed); ``reset(state, mask)`` silences the masked streams' history and keeps the shared clock.

    >>> r = Resample(48000, 16000)
    >>> y, state = r(torch.zeros(1, 4800))  # 100 ms in: 1600 samples less the filter's delay
    >>> y.shape[1], r.delay, r.latency_samples
    (1590, 10, 30)
    """

    input_frame = output_frame = SAMPLES
    changes_rate = True
    clock_fields = ("consumed", "next")

    def __init__(self, orig_rate: int, new_rate: int):
        super().__init__()
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive (got {orig_rate} and {new_rate})")
        g = gcd(int(orig_rate), int(new_rate))
        self.orig_rate, self.new_rate = int(orig_rate), int(new_rate)
        self.up, self.down = self.new_rate // g, self.orig_rate // g
        h = resample_filter(self.up, self.down) if self.up != self.down else np.ones(1)
        taps = -(-len(h) // self.up)
        padded = np.zeros(taps * self.up)
        padded[:len(h)] = h
        self.phases = torch.from_numpy(padded.reshape(taps, self.up).T.astype(np.float32))  # [phase, t] = h[phase + t up]
        self.delay = (len(h) - 1) // 2 // self.down
        self.latency_samples = -(-((len(h) - 1) // 2) // self.up)

    @property
    def identity(self) -> bool:
        return self.up == self.down

    @property
    def latency_s(self) -> float:  # type: ignore[override]
        return self.latency_samples / self.orig_rate

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> ResampleState:
        clock = torch.zeros(batch_size, dtype=torch.int64, device=device)
        return ResampleState(torch.zeros(batch_size, self.phases.shape[1], dtype=torch.float32, device=device),
                             clock, clock + self.delay)

    def _check(self, audio: Tensor, state: ResampleState) -> None:
        SAMPLES.check(audio, name="audio")
        check_finite(audio, "audio")
        if type(state) is not ResampleState or state.history.shape != (audio.shape[0], self.phases.shape[1]):
            raise ValueError(f"state must be the ResampleState of {audio.shape[0]} streams from Resample.init_state "
                             f"(got {type(state).__name__})")

    def forward(self, audio: Tensor, state: ResampleState | None = None) -> tuple[Tensor, ResampleState]:
        state = self.init_state(audio.shape[0], device=audio.device) if state is None else state
        self._check(audio, state)
        audio = audio.float()
        if self.identity:
            return audio, state._replace(consumed=state.consumed + audio.shape[1])
        taps = self.phases.shape[1]
        before, first = int(state.consumed[0]), int(state.next[0])
        total = before + audio.shape[1]
        last = (total * self.up - 1) // self.down           # the last upfirdn index whose inputs have all arrived
        seq = torch.cat([state.history, audio], dim=1)      # seq[:, i] is input before - taps + i
        new = ResampleState(seq[:, -taps:], state.consumed + audio.shape[1], state.next + max(0, last + 1 - first))
        if last < first:
            return audio.new_zeros(audio.shape[0], 0), new
        k = torch.arange(first, last + 1)
        newest = k * self.down // self.up                   # the newest input each output reads
        index = newest[:, None] - torch.arange(taps) - (before - taps)
        weights = self.phases[k * self.down % self.up]      # (outputs, taps)
        return torch.einsum("skt,kt->sk", seq[:, index], weights), new


class StreamingResampler:
    """:class:`Resample` for NumPy audio, keeping the state of ``streams`` streams itself.

    >>> r = StreamingResampler(48000, 16000)
    >>> sum(r(np.zeros((1, 480), np.float32)).shape[1] for _ in range(10))  # 100 ms in: 1600 less the delay
    1590
    >>> r.delay, r.latency_samples
    (10, 30)
    """

    def __init__(self, orig_rate: int, new_rate: int, streams: int = 1):
        self.operator = Resample(orig_rate, new_rate)
        self.orig_rate, self.new_rate, self.streams = self.operator.orig_rate, self.operator.new_rate, streams
        self.up, self.down, self.delay = self.operator.up, self.operator.down, self.operator.delay
        self.latency_samples = self.operator.latency_samples
        self.state = self.operator.init_state(streams)

    @property
    def identity(self) -> bool:
        return self.operator.identity

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or audio.shape[0] != self.streams:
            raise ValueError(f"audio must have shape (streams={self.streams}, samples) (got {audio.shape})")
        if self.identity:
            return audio
        out, self.state = self.operator(torch.from_numpy(audio), self.state)
        return out.numpy()
