"""Numba kernels for keyword detection over a chunk of frames: sliding means, softmax, and the trigger rules.

Both kernels update their state arrays in place and walk the frames of a
chunk in order, so a chunk of T frames gives exactly what T one-frame calls
give. A moving mean keeps a ring of its last ``W`` inputs and a float64
running total, re-summed from the ring whenever the ring wraps so rounding
cannot accumulate over hours.

Shapes: values ``(S, T, C)`` (streams, frames, classes); rings ``(S, W, C)``;
totals ``(S, C)`` float64; counts and refractory counters ``(S,)`` int64;
``above`` ``(S, C)`` int64; ``armed`` ``(S, C)`` bool.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _mean_step(x, ring, total, count, s, out) -> None:
    """Push ``x (C,)`` into stream ``s``'s ring; write the mean of its last ``W`` inputs into ``out (C,)``."""
    frames, classes = ring.shape[1], ring.shape[2]
    slot = count[s] % frames
    for c in range(classes):
        total[s, c] += np.float64(x[c]) - np.float64(ring[s, slot, c])
        ring[s, slot, c] = x[c]
    count[s] += 1
    if slot == frames - 1:
        for c in range(classes):
            acc = 0.0
            for w in range(frames):
                acc += np.float64(ring[s, w, c])
            total[s, c] = acc
    seen = min(count[s], frames)
    for c in range(classes):
        out[c] = np.float32(total[s, c] / seen)


@njit(cache=True, nogil=True)
def window_posteriors(logits, ring, total, count, out) -> None:
    """Softmax of each stream's logits averaged over its last ``W`` frames: ``(S, T, C)`` -> ``out (S, T, C)``."""
    streams, time, classes = logits.shape
    mean = np.empty(classes, np.float32)
    for s in range(streams):
        for t in range(time):
            _mean_step(logits[s, t], ring, total, count, s, mean)
            top = mean.max()
            norm = 0.0
            for c in range(classes):
                e = np.exp(np.float64(mean[c] - top))
                out[s, t, c] = e
                norm += e
            for c in range(classes):
                out[s, t, c] = np.float32(out[s, t, c] / norm)


@njit(cache=True, nogil=True)
def voice_activity(energy, floor, since, rise, margin, out) -> None:
    """Energy-based voice activity: ``energy (S, T)`` per-frame log energy -> ``out (S, T)`` frames since speech.

    The noise ``floor (S,)`` follows the energy down at once and creeps up by
    ``rise`` per frame; a frame is speech when it is ``margin`` above the
    floor. ``since (S,)`` counts frames since the last speech frame (NaN
    floor: a fresh stream, which starts at its first frame's energy).
    """
    streams, time = energy.shape
    for s in range(streams):
        for t in range(time):
            e = energy[s, t]
            if np.isnan(floor[s]) or e < floor[s]:
                floor[s] = e
            else:
                floor[s] += rise
            since[s] = 0 if e > floor[s] + margin else since[s] + 1
            out[s, t] = since[s]


@njit(cache=True, nogil=True)
def detect(posteriors, since_speech, ring, total, count, above, armed, quiet, thresholds, rearm, patience,
           refractory, gate, fired, score, smoothed) -> None:
    """The trigger over a chunk: ``fired (S, T)`` the class fired at each frame (-1: none), ``score (S, T)``
    its smoothed posterior, ``smoothed (S, C)`` the last frame's smoothed posteriors. A keyword fires only
    within ``gate`` frames of speech (``since_speech (S, T)``; a negative gate disables the check)."""
    streams, time, classes = posteriors.shape
    for s in range(streams):
        for t in range(time):
            _mean_step(posteriors[s, t], ring, total, count, s, smoothed[s])
            voiced = gate < 0 or since_speech[s, t] <= gate
            best, best_score = -1, np.float32(-1.0)
            for c in range(classes):
                p = smoothed[s, c]
                above[s, c] = above[s, c] + 1 if p >= thresholds[c] else 0
                if p < rearm[c]:
                    armed[s, c] = True
                if voiced and above[s, c] >= patience and armed[s, c] and quiet[s] <= 0 and p > best_score:
                    best, best_score = c, p
            if quiet[s] > 0:
                quiet[s] -= 1
            fired[s, t] = best
            score[s, t] = best_score if best >= 0 else np.float32(0.0)
            if best >= 0:
                armed[s, best] = False
                quiet[s] = refractory
