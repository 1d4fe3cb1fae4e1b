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

import numpy as np
from scipy.signal import firwin


def resample_filter(up: int, down: int) -> np.ndarray:
    """SciPy ``resample_poly``'s default anti-aliasing filter for ``up / down``, with its gain ``up``."""
    half = 10 * max(up, down)
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up


class StreamingResampler:
    """Resample ``streams`` audio streams from ``orig_rate`` to ``new_rate`` Hz, chunk by chunk.

    >>> r = StreamingResampler(48000, 16000)
    >>> sum(r(np.zeros((1, 480), np.float32)).shape[1] for _ in range(10))  # 100 ms in: 1600 less the delay
    1590
    >>> r.delay, r.latency_samples
    (10, 30)
    """

    def __init__(self, orig_rate: int, new_rate: int, streams: int = 1):
        if orig_rate <= 0 or new_rate <= 0:
            raise ValueError(f"sample rates must be positive (got {orig_rate} and {new_rate})")
        g = gcd(int(orig_rate), int(new_rate))
        self.orig_rate, self.new_rate, self.streams = int(orig_rate), int(new_rate), streams
        self.up, self.down = self.new_rate // g, self.orig_rate // g
        h = resample_filter(self.up, self.down) if self.up != self.down else np.ones(1)
        taps = -(-len(h) // self.up)
        padded = np.zeros(taps * self.up)
        padded[:len(h)] = h
        self.phases = padded.reshape(taps, self.up).T.astype(np.float32)  # [phase, t] = h[phase + t * up]
        self.delay = (len(h) - 1) // 2 // self.down
        self.latency_samples = -(-((len(h) - 1) // 2) // self.up)
        self._history = np.zeros((streams, taps), np.float32)   # the last `taps` inputs (zeros before the start)
        self._consumed = 0                                      # inputs seen
        self._next = self.delay                                 # the next upfirdn index to emit

    @property
    def identity(self) -> bool:
        return self.up == self.down

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32)
        if audio.ndim != 2 or audio.shape[0] != self.streams:
            raise ValueError(f"audio must have shape (streams={self.streams}, samples) (got {audio.shape})")
        if self.identity:
            return audio
        taps = self._history.shape[1]
        total = self._consumed + audio.shape[1]
        last = (total * self.up - 1) // self.down          # the last upfirdn index whose inputs have all arrived
        seq = np.concatenate([self._history, audio], axis=1)  # seq[:, i] is input self._consumed - taps + i
        self._history = seq[:, -taps:]
        self._consumed = total
        if last < self._next:
            return np.zeros((self.streams, 0), np.float32)
        k = np.arange(self._next, last + 1)
        self._next = last + 1
        newest = k * self.down // self.up                  # the newest input each output reads
        index = newest[:, None] - np.arange(taps) - (total - audio.shape[1] - taps)
        weights = self.phases[k * self.down % self.up]     # (outputs, taps)
        return np.einsum("skt,kt->sk", seq[:, index], weights).astype(np.float32)
