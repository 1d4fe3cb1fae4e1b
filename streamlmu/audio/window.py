"""The sliding-window posterior of a keyword model, in its two forms.

A keyword model's head is affine, so the mean of its per-frame logits over the
last ``W`` frames (fewer while a stream holds fewer) equals its head on the
mean features of those frames: with ``W`` one clip's worth of frames, an
endless stream is scored as the 1 s clips the model learnt from. The
posterior is the softmax of that mean.

* :func:`window_posteriors` streams it (NumPy, the Numba kernel of
  :mod:`streamlmu.kernels.detect`): per-frame logits ``(S, T, C)`` in, every frame's posterior out,
  the ring of the last ``W`` logits in a :class:`WindowState`;
* :func:`window_logits` is the parallel, differentiable form training uses: the window's mean logits at the
  last frame, from the running-mean logits ``(B, T, C)`` a model's forward gives.

The two are tested against each other (``tests/test_window.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from streamlmu.kernels import detect as kernels

if TYPE_CHECKING:
    from torch import Tensor


class WindowState(NamedTuple):
    """A moving mean per stream: ring ``(S, W, C)`` float32, total ``(S, C)`` float64, count ``(S,)`` int64."""

    ring: np.ndarray
    total: np.ndarray
    count: np.ndarray


def window_init(streams: int, frames: int, classes: int) -> WindowState:
    return WindowState(np.zeros((streams, frames, classes), np.float32), np.zeros((streams, classes), np.float64),
                       np.zeros(streams, np.int64))


def window_reset(state: WindowState, streams: np.ndarray) -> None:
    state.ring[streams] = 0.0
    state.total[streams] = 0.0
    state.count[streams] = 0


def window_posteriors(logits: np.ndarray, state: WindowState) -> np.ndarray:
    """Softmax of the logits averaged over each stream's last ``W`` frames (fewer after a reset):
    ``(S, T, C) -> (S, T, C)`` float32; ``state`` is updated in place."""
    logits = np.ascontiguousarray(logits, np.float32)
    out = np.empty_like(logits)
    kernels.window_posteriors(logits, *state, out)
    return out


def window_logits(running: Tensor, bias: Tensor, frames: int | None) -> Tensor:
    """Mean logits over the last ``frames`` frames (all of them if fewer, or if ``None``) from a model's
    running-mean logits: ``(B, T, C) -> (B, C)``; softmaxed, the last posterior of :func:`window_posteriors`.

    The head is affine: ``running[t] = W S_t / (t + 1) + bias`` with ``S_t`` the feature sum, so the window's
    mean is ``(T (running[T-1] - bias) - a (running[a-1] - bias)) / frames + bias`` with ``a = T - frames``.
    """
    if frames is None:
        return running[:, -1]
    total = running.shape[1]
    frames = min(frames, total)
    start = total - frames
    last = (running[:, -1] - bias) * total
    before = (running[:, start - 1] - bias) * start if start > 0 else 0.0
    return (last - before) / frames + bias
