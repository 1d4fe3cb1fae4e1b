"""A second-stage check of keyword detections: a clip classifier on the last second of audio.

The spotter fires on its sliding-window posterior. A verifier waits ``delay_s``
after each detection (so the word has ended), classifies the 1 s of audio that
ends then with a clip model (e.g. ``lmuformer-tiny-synth35``, which knows the
words a keyword is confused with: *dog* for *down*, *learn* for *left*), and
keeps the detection only if it gives the keyword a posterior of at least
``threshold``. Verified events carry the time they were confirmed, so the
delay shows in the latency.

One :class:`Verifier` decides; it runs live over a :class:`VerifierState` (each stream's last audio and its
waiting detections) or, for calibration, over a whole recording (:class:`RecordedVerifier`), classifying the
same windows the same way.

Shapes: audio ``(streams, samples)`` float32 at the models' sample rate.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from streamlmu.audio.frontend import clip_features
from streamlmu.stream import register_state

DEFAULT_DELAY_S = 0.2
DEFAULT_THRESHOLD = 0.1
_END, _TIME, _LABEL, _SCORE = range(4)  # the columns of VerifierState.waiting


class Candidate(NamedTuple):
    """A detection waiting for its audio: ``end`` the sample of the shared clock its window ends at, ``t`` the
    stream time in seconds it is confirmed at."""

    end: int
    t: float
    keyword: str
    score: float
    stream: int


@register_state
class VerifierState(NamedTuple):
    """``audio (S, 2 W)`` float32 each stream's last samples (clock sample ``i`` at column ``i % 2W``, ``W`` the
    clip length); ``start (S,)`` int64 each stream's first sample on the clock; ``samples (S,)`` int64 the shared
    clock (samples every stream has been given); ``waiting (S, P, 4)`` float64 detections waiting for their
    audio: the clock sample their window ends at, their confirmation time, label index, score (label -1: a
    free row)."""

    audio: Tensor
    start: Tensor
    samples: Tensor
    waiting: Tensor


class Verifier:
    """Confirms detections on the second of audio that ends ``delay_s`` after each.

    Args:
        model: a clip classifier with ``labels`` and ``features`` (what :func:`streamlmu.load_model` returns).
        keywords: the keywords it will be asked about (each must be one of ``model.labels``; default: all).
        delay_s: seconds to wait after a detection before classifying the second that ends then.
        threshold: the clip posterior of the keyword a detection needs to be kept.

    Live use: ``state = verifier.init_state(streams)``, then per chunk ``state = verifier.propose(state, ...)``
    for each detection and ``confirmed, rejected, state = verifier.accept(audio, state)``. No call changes the
    state it is given.
    """

    def __init__(self, model: torch.nn.Module, keywords: Sequence[str] | None = None,
                 delay_s: float = DEFAULT_DELAY_S, threshold: float = DEFAULT_THRESHOLD):
        labels = tuple(getattr(model, "labels", ()) or ())
        missing = [k for k in (labels if keywords is None else keywords) if k not in labels]
        if missing or not labels:
            raise ValueError(f"the verifier must know every keyword; it lacks {', '.join(missing) or 'labels'} "
                             f"(its labels: {', '.join(labels) or 'none'})")
        if not 0.0 <= delay_s <= 1.0 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"delay_s must be in [0, 1] seconds and threshold a posterior in [0, 1] "
                             f"(got {delay_s}, {threshold})")
        self.model, self.labels, self.features = model.eval(), labels, model.features
        self.threshold = float(threshold)
        self.delay = int(round(delay_s * self.features.sample_rate))
        self.window = self.features.sample_rate  # one second, the clip the model was trained on

    # ------------------------------------------------------------ the decision
    def posteriors(self, windows: np.ndarray) -> np.ndarray:
        """The clip model's posteriors: ``(n, W)`` float32 audio -> ``(n, classes)`` float32."""
        return clip_posteriors(self.model, windows)

    def keeps(self, posteriors: np.ndarray, keywords: Sequence[str]) -> np.ndarray:
        """Which detections stand: ``(n, classes)`` posteriors of their windows and their ``n`` keywords ->
        ``(n,)`` bool."""
        columns = [self.labels.index(k) for k in keywords]
        return posteriors[np.arange(len(columns)), columns] >= self.threshold

    def confirmed_at(self, heard: int, t: float) -> tuple[int, float]:
        """A detection whose frame ended at clock sample ``heard``, stream time ``t``: the clock sample its window
        ends at and the stream time it is confirmed at."""
        return heard + self.delay, t + self.delay / self.features.sample_rate

    # ------------------------------------------------------------ live, over a state
    def init_state(self, streams: int) -> VerifierState:
        return VerifierState(torch.zeros(streams, 2 * self.window), torch.zeros(streams, dtype=torch.int64),
                             torch.zeros(streams, dtype=torch.int64), torch.zeros(streams, 0, 4, dtype=torch.float64))

    def reset(self, state: VerifierState, mask: Tensor) -> VerifierState:
        """Drop the audio and the waiting detections of the streams where ``mask (S,)`` is true."""
        audio, start, waiting = state.audio.clone(), state.start.clone(), state.waiting.clone()
        audio[mask] = 0.0
        start[mask] = state.samples[mask]
        waiting[mask, :, _LABEL] = -1.0
        return VerifierState(audio, start, state.samples, waiting)

    def propose(self, state: VerifierState, heard: int, t: float, keyword: str, score: float,
                stream: int) -> VerifierState:
        """Add a detection at stream time ``t`` seconds whose frame ended at clock sample ``heard``; it is checked
        once ``delay_s`` more audio has arrived."""
        waiting = state.waiting
        free = torch.nonzero(waiting[stream, :, _LABEL] < 0).flatten()
        if len(free):
            row, waiting = int(free[0]), waiting.clone()
        else:
            row = waiting.shape[1]
            waiting = torch.cat([waiting, waiting.new_full((len(waiting), 1, 4), -1.0)], 1)
        end, at = self.confirmed_at(heard, t)
        waiting[stream, row] = torch.tensor([end, at, self.labels.index(keyword), score], dtype=torch.float64)
        return state._replace(waiting=waiting)

    def accept(self, audio: np.ndarray, state: VerifierState
               ) -> tuple[list[Candidate], list[Candidate], VerifierState]:
        """Append ``(S, n)`` audio; returns the detections it confirmed and those it rejected (each with its
        confirmation time, oldest first) and the new state."""
        ring, waiting, clock = state.audio.clone(), state.waiting.clone(), int(state.samples[0])
        size = ring.shape[1]
        confirmed: list[Candidate] = []
        rejected: list[Candidate] = []
        for first in range(0, audio.shape[1], self.window):  # the ring holds a window plus at most this much
            piece = torch.from_numpy(np.ascontiguousarray(audio[:, first:first + self.window]))
            ring[:, (clock + torch.arange(piece.shape[1])) % size] = piece
            clock += piece.shape[1]
            due = torch.nonzero((waiting[..., _LABEL] >= 0) & (waiting[..., _END] <= clock)).tolist()
            if not due:
                continue
            due.sort(key=lambda sr: (waiting[sr[0], sr[1], _END].item(), sr[0]))
            found = [Candidate(int(e), float(t), self.labels[int(k)], float(p), s)
                     for s, r in due for e, t, k, p in [waiting[s, r].tolist()]]
            windows = np.zeros((len(found), self.window), np.float32)
            for row, c in enumerate(found):
                begin = max(c.end - self.window, int(state.start[c.stream]))  # nothing before the stream began
                windows[row, self.window - (c.end - begin):] = ring[c.stream, torch.arange(begin, c.end) % size]
            kept = self.keeps(self.posteriors(windows), [c.keyword for c in found])
            confirmed += [c for c, k in zip(found, kept) if k]
            rejected += [c for c, k in zip(found, kept) if not k]
            for s, r in due:
                waiting[s, r, _LABEL] = -1.0
        return confirmed, rejected, VerifierState(ring, state.start, torch.full_like(state.samples, clock), waiting)


def clip_posteriors(model: torch.nn.Module, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class posteriors of a clip model: ``(n, samples)`` float32 audio -> ``(n, classes)`` float32."""
    out = []
    with torch.no_grad():
        for first in range(0, len(windows), batch):
            waves = torch.from_numpy(np.ascontiguousarray(windows[first:first + batch]))
            out.append(torch.softmax(model.classify(clip_features(waves, model.features)), -1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


class RecordedVerifier:
    """The :class:`Verifier`'s decisions on recorded streams, for calibrating thresholds with the second stage in
    place.

    ``audio (streams, samples)`` holds the streams from their start, as the spotter heard them. Called with each
    stream's events (anything with ``t``, ``keyword``, ``stream`` and ``_replace``, such as
    :class:`streamlmu.audio.kws.Event`), it returns the events the live verifier confirms, at their
    confirmation times; an event whose window runs past the recording is dropped, as live it is never
    confirmed. Each window is classified once, however many calls ask about it.
    """

    def __init__(self, model: torch.nn.Module, audio: np.ndarray, delay_s: float = DEFAULT_DELAY_S,
                 threshold: float = DEFAULT_THRESHOLD):
        self.verifier, self.audio = Verifier(model, None, delay_s, threshold), audio
        self.rate = self.verifier.features.sample_rate
        self._posteriors: dict[tuple[int, int], np.ndarray] = {}

    def _classify(self, wanted: set[tuple[int, int]]) -> None:
        keys = sorted(wanted - self._posteriors.keys())
        size = self.verifier.window
        windows = np.zeros((len(keys), size), np.float32)
        for row, (stream, end) in enumerate(keys):
            begin = max(end - size, 0)
            windows[row, size - (end - begin):] = self.audio[stream, begin:end]
        self._posteriors.update(zip(keys, self.verifier.posteriors(windows)))

    def __call__(self, events: Sequence[Sequence]) -> list[list]:
        length, out = self.audio.shape[1], []
        for stream in events:
            confirmed = [(e, self.verifier.confirmed_at(int(round(e.t * self.rate)), e.t)) for e in stream]
            out.append([(e, (e.stream, end), t) for e, (end, t) in confirmed if end <= length])
        self._classify({key for stream in out for _, key, _ in stream})
        kept = []
        for stream in out:
            if not stream:
                kept.append([])
                continue
            posteriors = np.array([self._posteriors[key] for _, key, _ in stream]).reshape(len(stream), -1)
            keeps = self.verifier.keeps(posteriors, [e.keyword for e, _, _ in stream])
            kept.append([e._replace(t=t) for (e, _, t), keep in zip(stream, keeps) if keep])
        return kept
