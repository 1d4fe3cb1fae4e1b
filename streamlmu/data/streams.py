"""Long keyword-spotting test streams cut from a Speech Commands split, with ground-truth word times.

A stream is a background-noise bed with words placed one after another:
each word is the spoken part of a clip (from ``metadata.csv`` of a synthetic
corpus, or the clip's loud part for the real corpus) with a short margin and
fades, separated by pauses and now and then a long stretch of background
only. About ``keyword_fraction`` of the words are keywords; the others are
the split's other words.

Shapes: a stream is float32 ``(samples,)`` at 16 kHz; times are seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from streamlmu.data.speech_commands import SAMPLE_RATE, SpeechCommands, read_audio
from streamlmu.data.synth import read_metadata, speech_span


class Occurrence(NamedTuple):
    """One spoken word of a stream: ``start`` and ``end`` in seconds."""

    start: float
    end: float
    word: str


@dataclass(frozen=True)
class StreamConfig:
    """How streams are laid out; ranges are ``(low, high)``, drawn uniformly."""

    seconds: float = 300.0
    keyword_fraction: float = 0.5
    pause_s: tuple[float, float] = (1.0, 2.5)
    long_pause_probability: float = 0.1
    long_pause_s: tuple[float, float] = (5.0, 20.0)
    noise_dbfs: tuple[float, float] = (-60.0, -40.0)   # RMS level of the background bed
    margin_s: float = 0.05
    fade_s: float = 0.01


def _word_of(rel: str) -> str:
    return rel.split("/", 1)[0]


class StreamBuilder:
    """Builds streams from the word clips of ``dataset`` (a 35-label :class:`SpeechCommands` split)."""

    def __init__(self, dataset: SpeechCommands, keywords: tuple[str, ...], cfg: StreamConfig = StreamConfig()):
        self.dataset, self.cfg = dataset, cfg
        self.metadata = read_metadata(dataset.root)
        clips = [rel for rel, _ in dataset.items if rel is not None]
        self.keyword_clips = [rel for rel in clips if _word_of(rel) in keywords]
        self.other_clips = [rel for rel in clips if _word_of(rel) not in keywords]
        if not self.keyword_clips:
            raise ValueError(f"the {dataset.subset} split of {dataset.root} has no clips of the keywords "
                             f"{', '.join(keywords)}")
        self.noises = [n.numpy() for n in dataset.noises]
        self._cache: dict[str, tuple[np.ndarray, float, float]] = {}

    def _word(self, rel: str) -> tuple[np.ndarray, float, float]:
        """The spoken part of clip ``rel`` with margins and fades, the margin before the word and its length (s)."""
        if rel not in self._cache:
            wave = read_audio(self.dataset.root / rel).numpy()
            row = self.metadata.get(rel)
            if row is not None:
                start, end = int(float(row["onset_s"]) * SAMPLE_RATE), int(float(row["end_s"]) * SAMPLE_RATE)
            else:
                start, end = speech_span(wave)
            margin = int(self.cfg.margin_s * SAMPLE_RATE)
            lo, hi = max(0, start - margin), min(len(wave), end + margin)
            piece = wave[lo:hi].copy()
            fade = min(int(self.cfg.fade_s * SAMPLE_RATE), len(piece) // 2)
            if fade:
                ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
                piece[:fade] *= ramp
                piece[-fade:] *= ramp[::-1]
            self._cache[rel] = (piece, (start - lo) / SAMPLE_RATE, (end - start) / SAMPLE_RATE)
        return self._cache[rel]

    def _bed(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        level = 10 ** (rng.uniform(*self.cfg.noise_dbfs) / 20)
        if not self.noises:
            return (rng.standard_normal(samples) * level).astype(np.float32)
        noise = self.noises[int(rng.integers(len(self.noises)))]
        reps = -(-samples // len(noise)) + 1
        start = int(rng.integers(len(noise)))
        bed = np.tile(noise, reps)[start:start + samples]
        return (bed * level / (np.sqrt(np.mean(bed ** 2)) + 1e-12)).astype(np.float32)

    def build(self, seed: int) -> tuple[np.ndarray, list[Occurrence]]:
        """One stream of ``cfg.seconds`` and its words; the same seed gives the same stream."""
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        samples = int(cfg.seconds * SAMPLE_RATE)
        audio = self._bed(samples, rng)
        truth: list[Occurrence] = []
        t = rng.uniform(*cfg.pause_s)
        while True:
            pool = self.keyword_clips if (rng.uniform() < cfg.keyword_fraction or not self.other_clips) \
                else self.other_clips
            rel = pool[int(rng.integers(len(pool)))]
            piece, lead, length = self._word(rel)
            begin = int(t * SAMPLE_RATE)
            if begin + len(piece) > samples:
                break
            audio[begin:begin + len(piece)] += piece
            onset = begin / SAMPLE_RATE + lead
            truth.append(Occurrence(round(onset, 4), round(onset + length, 4), _word_of(rel)))
            t = (begin + len(piece)) / SAMPLE_RATE
            long = rng.uniform() < cfg.long_pause_probability
            t += rng.uniform(*(cfg.long_pause_s if long else cfg.pause_s))
        return np.clip(audio, -1.0, 1.0), truth
