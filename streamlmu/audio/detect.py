"""Keyword detection from per-frame posteriors: smoothing, thresholds, patience, refractory time, re-arming.

A product-grade trigger over a stream of class posteriors, for many streams at
once (NumPy, vectorised over streams)::

    smoothed = moving average of the posteriors over ``smooth_frames``
    a keyword k fires on stream b when
        smoothed[b, k] >= thresholds[k] for ``patience_frames`` frames in a row,
        k is armed (its score fell below ``rearm[k]`` since it last fired), and
        stream b is outside the ``refractory_frames`` after its previous event.

At most one keyword fires per stream and frame (the highest score among those
that qualify). A class whose threshold is ``inf`` never fires: the
``_unknown_`` and ``_silence_`` labels and every label that is not a keyword.

Shapes: posteriors ``(streams, classes)`` per frame; state arrays
``(streams, ...)``; every function updates the state arrays in place and
returns them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

NON_KEYWORDS = ("_unknown_", "_silence_")


class MovingAverageState(NamedTuple):
    """ring ``(streams, frames, features)``, total ``(streams, features)`` float64, count ``(streams,)`` int64."""

    ring: np.ndarray
    total: np.ndarray
    count: np.ndarray


def moving_average_init(streams: int, frames: int, features: int) -> MovingAverageState:
    return MovingAverageState(np.zeros((streams, frames, features), np.float32),
                              np.zeros((streams, features), np.float64), np.zeros(streams, np.int64))


def moving_average_step(x: np.ndarray, state: MovingAverageState) -> np.ndarray:
    """The mean of each stream's last ``frames`` inputs (fewer right after a reset): ``(S, F) -> (S, F)``.

    The running total is re-summed from the ring each time a stream's ring
    wraps, so rounding does not accumulate over hours.
    """
    ring, total, count = state
    frames = ring.shape[1]
    slot = count % frames
    rows = np.arange(len(x))
    total -= ring[rows, slot]
    ring[rows, slot] = x
    total += x
    count += 1
    wrapped = slot == frames - 1
    if wrapped.any():
        total[wrapped] = ring[wrapped].sum(axis=1, dtype=np.float64)
    return (total / np.minimum(count, frames)[:, None]).astype(np.float32)


def moving_average_reset(state: MovingAverageState, streams: np.ndarray) -> None:
    state.ring[streams] = 0.0
    state.total[streams] = 0.0
    state.count[streams] = 0


@dataclass(frozen=True)
class DetectorConfig:
    """Trigger settings; times in frames (10 ms each with the paper's features).

    ``thresholds[k]``: smoothed posterior keyword ``k`` must reach (``inf``: never
    fires); ``rearm[k]``: it must fall below this before ``k`` fires again.
    """

    thresholds: tuple[float, ...]
    rearm: tuple[float, ...]
    smooth_frames: int = 5
    patience_frames: int = 3
    refractory_frames: int = 30

    def __post_init__(self) -> None:
        if len(self.thresholds) != len(self.rearm):
            raise ValueError(f"thresholds and rearm need one value per class (got {len(self.thresholds)} and "
                             f"{len(self.rearm)})")
        if min(self.smooth_frames, self.patience_frames) < 1 or self.refractory_frames < 0:
            raise ValueError("smooth_frames and patience_frames must be >= 1 and refractory_frames >= 0 (got "
                             f"{self.smooth_frames}, {self.patience_frames}, {self.refractory_frames})")
        if any(r > t for r, t in zip(self.rearm, self.thresholds)):
            raise ValueError("each rearm level must be <= its threshold")


class DetectorState(NamedTuple):
    """smooth: the posterior average; above ``(S, C)`` int64 frames in a row over the threshold;
    armed ``(S, C)`` bool; quiet ``(S,)`` int64 refractory frames left."""

    smooth: MovingAverageState
    above: np.ndarray
    armed: np.ndarray
    quiet: np.ndarray


def detector_init(streams: int, cfg: DetectorConfig) -> DetectorState:
    classes = len(cfg.thresholds)
    return DetectorState(moving_average_init(streams, cfg.smooth_frames, classes),
                         np.zeros((streams, classes), np.int64), np.ones((streams, classes), bool),
                         np.zeros(streams, np.int64))


def detector_step(posteriors: np.ndarray, state: DetectorState,
                  cfg: DetectorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame: posteriors ``(S, C)`` -> (fired class ``(S,)`` int64, -1 for none; its score ``(S,)``;
    the smoothed posteriors ``(S, C)``)."""
    smoothed = moving_average_step(posteriors, state.smooth)
    thresholds = np.asarray(cfg.thresholds, np.float32)
    over = smoothed >= thresholds
    state.above[:] = np.where(over, state.above + 1, 0)
    np.logical_or(state.armed, smoothed < np.asarray(cfg.rearm, np.float32), out=state.armed)
    ready = (state.above >= cfg.patience_frames) & state.armed & (state.quiet <= 0)[:, None]
    candidate = np.where(ready, smoothed, -np.inf)
    best = candidate.argmax(axis=1)
    fired = np.where(ready.any(axis=1), best, -1)
    rows = np.flatnonzero(fired >= 0)
    state.armed[rows, fired[rows]] = False
    state.quiet[:] = np.maximum(state.quiet - 1, 0)
    state.quiet[rows] = cfg.refractory_frames
    score = np.where(fired >= 0, smoothed[np.arange(len(fired)), best], 0.0).astype(np.float32)
    return fired, score, smoothed


def detector_reset(state: DetectorState, streams: np.ndarray) -> None:
    moving_average_reset(state.smooth, streams)
    state.above[streams] = 0
    state.armed[streams] = True
    state.quiet[streams] = 0


def keyword_thresholds(labels: tuple[str, ...], keywords: tuple[str, ...] | None,
                       threshold: float | dict[str, float]) -> tuple[float, ...]:
    """Per-class thresholds: ``threshold`` (one value or per keyword) for the keywords, ``inf`` elsewhere.

    ``keywords=None``: every label except ``_unknown_`` and ``_silence_``.
    """
    if keywords is None:
        keywords = tuple(label for label in labels if label not in NON_KEYWORDS)
    unknown = [k for k in keywords if k not in labels]
    if unknown:
        raise ValueError(f"unknown keyword(s) {', '.join(unknown)}; the model's labels are {', '.join(labels)}")
    if isinstance(threshold, dict):
        extra = [k for k in threshold if k not in keywords]
        if extra:
            raise ValueError(f"thresholds given for {', '.join(extra)}, which are not keywords here")
    values = []
    for label in labels:
        if label not in keywords or label in NON_KEYWORDS:
            values.append(float("inf"))
        else:
            value = threshold.get(label, 0.5) if isinstance(threshold, dict) else threshold
            if not 0.0 < value <= 1.0:
                raise ValueError(f"a threshold is a posterior in (0, 1] (got {value} for {label!r})")
            values.append(float(value))
    return tuple(values)
