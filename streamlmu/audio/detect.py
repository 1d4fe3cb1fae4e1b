"""Keyword detection from per-frame posteriors: smoothing, thresholds, patience, refractory time, re-arming.

A product-grade trigger over a stream of class posteriors, for many streams at
once (NumPy, vectorised over streams)::

    smoothed = moving average of the posteriors over ``smooth_frames``
    a keyword k fires on stream b when
        smoothed[b, k] >= thresholds[k] for ``patience_frames`` frames in a row,
        k is armed (its score fell below ``rearm_fraction * thresholds[k]`` since it last fired), and
        stream b is outside the ``refractory_frames`` after its previous event and past its first
        ``warmup_frames`` since it began or was reset, and
        speech was heard on stream b within the last ``speech_gate_frames``.

The speech gate is an energy voice-activity detector: a frame is speech when
its log energy (the mean of its normalised log-mel features, or its level in
dB over :data:`ENERGY_UNIT_DB`) is ``vad_margin`` above a noise floor that follows the energy down at once and
creeps up by ``vad_rise`` per frame. It stops a keyword from firing on a
window that holds only the tail of an earlier word (the end of "stop" or
"right" reads as "up") or on silence. Its margin lets quiet words through:
at 10 dB it held back 3 % of the keywords of validation streams, keywords
the spotter had scored above their thresholds; at 5 dB, almost none (see the
model card).

The warm-up keeps a fresh stream quiet while its model state and logit window
fill: on the first frames of background noise the bundled spotter can score a
keyword near 1.0 (without a warm-up it fired 146 times on 800 starts of
validation noise beds, all within 0.56 s; see the model card).

At most one keyword fires per stream and frame (the highest score among those
that qualify). A class whose threshold is ``inf`` never fires: the
``_unknown_`` and ``_silence_`` labels and every label that is not a keyword.

The logits of the model are first averaged over a sliding window and turned
into posteriors (:mod:`streamlmu.audio.window`). The loops run in Numba
(:mod:`streamlmu.kernels.detect`) over whole chunks of frames.

Shapes: posteriors ``(streams, frames, classes)`` per chunk; state arrays
``(streams, ...)``, updated in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamlmu.audio.window import WindowState, window_init, window_reset
from streamlmu.kernels import detect as kernels

NON_KEYWORDS = ("_unknown_", "_silence_")
ENERGY_UNIT_DB = 20.0 * 5.5654526 / np.log(10.0)  # dB in one unit of normalised log-mel energy (2 std of ln power)
DEFAULT_THRESHOLD = 0.95
_LONG_AGO = 1 << 40  # frames since speech of a stream that has heard none


@dataclass(frozen=True)
class DetectorConfig:
    """Trigger settings; times in frames of the model's front end (10 ms with the paper's features).

    ``thresholds[k]``: smoothed posterior keyword ``k`` must reach (``inf``: never
    fires); it must fall below ``rearm_fraction`` of that before ``k`` fires again.
    """

    thresholds: tuple[float, ...]
    rearm_fraction: float = 0.5
    smooth_frames: int = 5
    patience_frames: int = 3
    refractory_frames: int = 30
    speech_gate_frames: int = 40       # negative: no speech gate
    vad_margin: float = 0.1            # about 5 dB in normalised log-mel units (1 unit = 2 std of ln power, 48 dB)
    vad_rise: float = 0.0006           # per frame: about 3 dB per second with 10 ms frames
    warmup_frames: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rearm_fraction <= 1.0:
            raise ValueError(f"rearm_fraction must be in [0, 1] (got {self.rearm_fraction})")
        if min(self.smooth_frames, self.patience_frames) < 1 or min(self.refractory_frames, self.warmup_frames) < 0:
            raise ValueError("smooth_frames and patience_frames must be >= 1, refractory_frames and warmup_frames "
                             f">= 0 (got {self.smooth_frames}, {self.patience_frames}, {self.refractory_frames}, "
                             f"{self.warmup_frames})")


class DetectorState(NamedTuple):
    """floor ``(S,)`` float32 the noise floor (NaN before the first frame); since ``(S,)`` int64 frames since
    speech; smooth: the posterior mean; above ``(S, C)`` int64 frames in a row over the threshold; armed
    ``(S, C)`` bool; quiet ``(S,)`` int64 refractory or warm-up frames left; smoothed ``(S, C)`` the last
    smoothed posteriors."""

    floor: np.ndarray
    since: np.ndarray
    smooth: WindowState
    above: np.ndarray
    armed: np.ndarray
    quiet: np.ndarray
    smoothed: np.ndarray


def detector_init(streams: int, cfg: DetectorConfig) -> DetectorState:
    classes = len(cfg.thresholds)
    return DetectorState(np.full(streams, np.nan, np.float32), np.full(streams, _LONG_AGO, np.int64),
                         window_init(streams, cfg.smooth_frames, classes), np.zeros((streams, classes), np.int64),
                         np.ones((streams, classes), bool), np.full(streams, cfg.warmup_frames, np.int64),
                         np.zeros((streams, classes), np.float32))


def frame_energy(features: np.ndarray) -> np.ndarray:
    """Log energy of normalised log-mel frames for the speech gate: ``(S, T, mel) -> (S, T)`` float32."""
    return np.ascontiguousarray(features.mean(axis=-1), np.float32)


def level_energy(level_db: np.ndarray) -> np.ndarray:
    """Frame levels in dB as the speech gate's energy (in normalised log-mel units): ``(S, T) -> (S, T)`` float32."""
    return np.ascontiguousarray(level_db / ENERGY_UNIT_DB, np.float32)


def detector_run(posteriors: np.ndarray, energy: np.ndarray, state: DetectorState,
                 cfg: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """A chunk of frames: posteriors ``(S, T, C)`` and :func:`frame_energy` ``(S, T)`` -> (fired class ``(S, T)``
    int64, -1 for none; its smoothed posterior ``(S, T)`` float32)."""
    posteriors = np.ascontiguousarray(posteriors, np.float32)
    streams, time = posteriors.shape[:2]
    since = np.empty((streams, time), np.int64)
    kernels.voice_activity(np.ascontiguousarray(energy, np.float32), state.floor, state.since,
                           np.float32(cfg.vad_rise), np.float32(cfg.vad_margin), since)
    fired = np.empty((streams, time), np.int64)
    score = np.empty((streams, time), np.float32)
    thresholds = np.asarray(cfg.thresholds, np.float32)
    kernels.detect(posteriors, since, *state.smooth, state.above, state.armed, state.quiet,
                   thresholds, thresholds * np.float32(cfg.rearm_fraction), cfg.patience_frames,
                   cfg.refractory_frames, cfg.speech_gate_frames, fired, score, state.smoothed)
    return fired, score


def detector_reset(state: DetectorState, streams: np.ndarray, cfg: DetectorConfig) -> None:
    state.floor[streams] = np.nan
    state.since[streams] = _LONG_AGO
    window_reset(state.smooth, streams)
    state.above[streams] = 0
    state.armed[streams] = True
    state.quiet[streams] = cfg.warmup_frames
    state.smoothed[streams] = 0.0


def keyword_thresholds(labels: tuple[str, ...], keywords: tuple[str, ...] | None,
                       threshold: float | dict[str, float]) -> tuple[float, ...]:
    """Per-class thresholds: ``threshold`` (one value, or per keyword with ``DEFAULT_THRESHOLD`` for the keywords
    it leaves out) for the keywords, ``inf`` elsewhere.

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
            value = threshold.get(label, DEFAULT_THRESHOLD) if isinstance(threshold, dict) else threshold
            if not 0.0 < value <= 1.0:
                raise ValueError(f"a threshold is a posterior in (0, 1] (got {value} for {label!r})")
            values.append(float(value))
    return tuple(values)
