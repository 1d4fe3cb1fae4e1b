"""A second-stage check of keyword detections: a clip classifier on the last second of audio.

The spotter fires on its sliding-window posterior. A verifier waits ``delay_s``
after each detection (so the word has ended), classifies the 1 s of audio that
ends then with a clip model (e.g. ``lmuformer-tiny-synth35``, which knows the
words a keyword is confused with: *dog* for *down*, *learn* for *left*), and
keeps the detection only if it gives the keyword a posterior of at least
``threshold``. Verified events carry the time they were confirmed, so the
delay shows in the latency.

Shapes: audio ``(streams, samples)`` float32 at the models' sample rate.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from streamlmu.audio.frontend import clip_features

DEFAULT_DELAY_S = 0.2
DEFAULT_THRESHOLD = 0.1


class Candidate(NamedTuple):
    """A detection waiting for its audio: ``end`` the sample of the shared clock its window ends at, ``t`` the
    stream time in seconds it is confirmed at."""

    end: int
    t: float
    keyword: str
    score: float
    stream: int


class Verifier:
    """Keeps each stream's last second of audio and checks detections once their window has arrived.

    Args:
        model: a clip classifier with ``labels`` and ``features`` (what :func:`streamlmu.load_model` returns).
        streams: audio streams, as the spotter's.
        keywords: the keywords it will be asked about (each must be one of ``model.labels``).
        delay_s: seconds to wait after a detection before classifying the second that ends then.
        threshold: the clip posterior of the keyword a detection needs to be kept.
    """

    def __init__(self, model: torch.nn.Module, streams: int, keywords: tuple[str, ...],
                 delay_s: float = DEFAULT_DELAY_S, threshold: float = DEFAULT_THRESHOLD):
        labels = tuple(getattr(model, "labels", ()) or ())
        missing = [k for k in keywords if k not in labels]
        if missing:
            raise ValueError(f"the verifier must know every keyword; it lacks {', '.join(missing)} "
                             f"(its labels: {', '.join(labels) or 'none'})")
        if not 0.0 <= delay_s <= 1.0 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"delay_s must be in [0, 1] seconds and threshold a posterior in [0, 1] "
                             f"(got {delay_s}, {threshold})")
        self.model, self.labels, self.features = model.eval(), labels, model.features
        self.streams, self.threshold = streams, float(threshold)
        self.delay = int(round(delay_s * self.features.sample_rate))
        self.window = self.features.sample_rate  # one second, the clip the model was trained on
        self.rejected = 0
        self.reset()

    def reset(self, stream: int | None = None) -> None:
        """Drop the audio and the waiting detections of ``stream`` (every stream if None)."""
        if stream is None:
            self._ring = np.zeros((self.streams, 2 * self.window), np.float32)  # clock sample i at column i % size
            self._start = np.zeros(self.streams, np.int64)  # each stream's first sample on the clock
            self._samples = 0                                # samples every stream has heard (one clock)
            self._waiting: list[Candidate] = []
            return
        self._ring[stream] = 0.0
        self._start[stream] = self._samples
        self._waiting = [c for c in self._waiting if c.stream != stream]

    def propose(self, heard: int, t: float, keyword: str, score: float, stream: int) -> None:
        """A detection at stream time ``t`` seconds whose frame ended at sample ``heard`` of the shared clock (the
        samples every stream has been given); it is checked once ``delay_s`` more audio has arrived."""
        self._waiting.append(Candidate(heard + self.delay, t + self.delay / self.features.sample_rate, keyword,
                                       score, stream))

    def accept(self, audio: np.ndarray) -> list[Candidate]:
        """Append ``(streams, n)`` audio; returns the detections it confirmed, with their confirmation times."""
        kept: list[Candidate] = []
        for first in range(0, audio.shape[1], self.window):  # the ring holds a window plus at most this much
            piece = audio[:, first:first + self.window]
            self._ring[:, (self._samples + np.arange(piece.shape[1])) % self._ring.shape[1]] = piece
            self._samples += piece.shape[1]
            kept += self._check([c for c in self._waiting if c.end <= self._samples])
            self._waiting = [c for c in self._waiting if c.end > self._samples]
        return kept

    def _check(self, due: list[Candidate]) -> list[Candidate]:
        """The detections among ``due`` (whose windows have arrived) that the clip model confirms."""
        if not due:
            return []
        windows = np.zeros((len(due), self.window), np.float32)
        for row, c in enumerate(due):
            begin = max(c.end - self.window, int(self._start[c.stream]))  # nothing before the stream began
            columns = np.arange(begin, c.end) % self._ring.shape[1]
            windows[row, self.window - (c.end - begin):] = self._ring[c.stream, columns]
        posteriors = clip_posteriors(self.model, windows)
        kept = [c for row, c in enumerate(due) if float(posteriors[row, self.labels.index(c.keyword)]) >= self.threshold]
        self.rejected += len(due) - len(kept)
        return kept


def clip_posteriors(model: torch.nn.Module, windows: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class posteriors of a clip model: ``(n, samples)`` float32 audio -> ``(n, classes)`` float32."""
    out = []
    with torch.no_grad():
        for first in range(0, len(windows), batch):
            waves = torch.from_numpy(np.ascontiguousarray(windows[first:first + batch]))
            out.append(torch.softmax(model.classify(clip_features(waves, model.features)), -1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


class RecordedVerifier:
    """The verifier's decisions on recorded streams, for calibrating thresholds with the second stage in place.

    ``audio (streams, samples)`` holds the streams from their start, as the spotter heard them. Called with each
    stream's events (anything with ``t``, ``keyword``, ``stream`` and ``_replace``, such as
    :class:`streamlmu.audio.kws.Event`), it returns the events the live :class:`Verifier` confirms, at their
    confirmation times; an event whose window runs past the recording is dropped, as live it is never
    confirmed. Each window is classified once, however many calls ask about it.
    """

    def __init__(self, model: torch.nn.Module, audio: np.ndarray, delay_s: float = DEFAULT_DELAY_S,
                 threshold: float = DEFAULT_THRESHOLD):
        self.model, self.audio, self.threshold = model.eval(), audio, float(threshold)
        self.labels, self.rate = tuple(model.labels), model.features.sample_rate
        self.delay, self.window = int(round(delay_s * self.rate)), self.rate
        self._posteriors: dict[tuple[int, int], np.ndarray] = {}

    def _end(self, event) -> int:
        return int(round(event.t * self.rate)) + self.delay  # the sample after the verified window

    def _classify(self, wanted: set[tuple[int, int]]) -> None:
        keys = sorted(wanted - self._posteriors.keys())
        windows = np.zeros((len(keys), self.window), np.float32)
        for row, (stream, end) in enumerate(keys):
            begin = max(end - self.window, 0)
            windows[row, self.window - (end - begin):] = self.audio[stream, begin:end]
        self._posteriors.update(zip(keys, clip_posteriors(self.model, windows)))

    def __call__(self, events: Sequence[Sequence]) -> list[list]:
        length, shift = self.audio.shape[1], self.delay / self.rate
        due = [[(e, (e.stream, self._end(e))) for e in stream if self._end(e) <= length] for stream in events]
        self._classify({key for stream in due for _, key in stream})
        return [[e._replace(t=e.t + shift) for e, key in stream
                 if self._posteriors[key][self.labels.index(e.keyword)] >= self.threshold] for stream in due]
