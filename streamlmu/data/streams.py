"""Long keyword-spotting streams built from a Speech Commands split, with ground-truth word times, and
training windows cut from such streams (:class:`StreamWindows`).

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
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from streamlmu.data.speech_commands import (SAMPLE_RATE, SILENCE, UNKNOWN, WORDS_10, AudioFileError, SpeechCommands,
                                            labels_for, read_audio)
from streamlmu.data.synth import read_metadata, speech_span

if TYPE_CHECKING:
    from streamlmu.data.phrases import PhraseStreamBuilder


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


def background_bed(noises: list[np.ndarray], samples: int, level_dbfs: tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """``samples`` of one of ``noises`` (looped from a random sample; white noise if there are none) at an RMS
    level drawn from ``level_dbfs``."""
    level = 10 ** (rng.uniform(*level_dbfs) / 20)
    if not noises:
        return (rng.standard_normal(samples) * level).astype(np.float32)
    noise = noises[int(rng.integers(len(noises)))]
    start = int(rng.integers(len(noise)))
    bed = noise[(start + np.arange(samples)) % len(noise)]
    return (bed * level / (np.sqrt(np.mean(bed ** 2)) + 1e-12)).astype(np.float32)


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

    def word(self, rel: str) -> tuple[np.ndarray, float, float]:
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

    def bed(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        """``samples`` of background: a noise recording of the split (white noise without one) at a random level."""
        return background_bed(self.noises, samples, self.cfg.noise_dbfs, rng)

    def build(self, seed: int) -> tuple[np.ndarray, list[Occurrence]]:
        """One stream of ``cfg.seconds`` and its words; the same seed gives the same stream."""
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        samples = int(cfg.seconds * SAMPLE_RATE)
        audio = self.bed(samples, rng)
        truth: list[Occurrence] = []
        t = rng.uniform(*cfg.pause_s)
        while True:
            pool = self.keyword_clips if (rng.uniform() < cfg.keyword_fraction or not self.other_clips) \
                else self.other_clips
            rel = pool[int(rng.integers(len(pool)))]
            piece, lead, length = self.word(rel)
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


def build_streams(builder: StreamBuilder | PhraseStreamBuilder, count: int,
                  seed: int) -> tuple[np.ndarray, list[list[Occurrence]]]:
    """``count`` streams of ``builder`` (seeds ``seed``, ``seed + 1``...), stacked ``(count, samples)``, and their
    words."""
    built = [builder.build(seed=seed + i) for i in range(count)]
    return np.stack([audio for audio, _ in built]), [truth for _, truth in built]


class StreamWindows(Dataset):
    """Training windows cut from streams, labelled as a live spotter should answer at the window's end.

    Each item is ``context_s + window_s`` seconds of a stream (words over a
    background bed) and the label of its last ``window_s`` in task ``labels``
    (12, or 37 where every word is a class; see :func:`labels_for`):

    * a word that lies wholly inside the window (its end in the window's last
      half) -> that word if it is a class, else ``_unknown_``; half of these
      windows also start on the tail of an earlier word;
    * only the tail of an earlier word -> ``_unknown_`` (the end of "stop"
      must not read as "up");
    * with ``word_heads``, that share of the other words' windows ends while
      the word is still being spoken (10-80 % of it heard) -> ``_unknown_``
      (the start of "nine" must not read as "no");
    * background only -> ``_silence_``.

    Half of the word windows hold a keyword (drawn from all keyword clips).
    ``hard_negatives``: other words (e.g. *dog*, *learn*, *nine*, which a spotter
    takes for *down*, *left*, *no*) that fill ``hard_negative_fraction`` of the
    other half instead of the item's own clip.
    An unreadable clip gives ``None`` with ``skip_bad_files`` (see :func:`collate`).

    Item ``i`` centres on clip ``i`` of ``dataset`` (a 35-label split);
    ``set_epoch`` draws new streams around the same clips.
    Shapes: waveform ``(samples,)`` float32 at 16 kHz.
    """

    def __init__(self, dataset: SpeechCommands, keywords: tuple[str, ...] = WORDS_10, window_s: float = 1.0,
                 context_s: float = 1.0, seed: int = 0, skip_bad_files: bool = False,
                 cfg: StreamConfig = StreamConfig(), labels: int = 12, hard_negatives: tuple[str, ...] = (),
                 hard_negative_fraction: float = 0.5, word_heads: float = 0.0):
        if labels not in (12, 37):
            raise ValueError(f"stream windows have 12 or 37 labels (got {labels!r}); both need _unknown_ and "
                             f"_silence_")
        if not 0.0 <= hard_negative_fraction <= 1.0 or not 0.0 <= word_heads <= 1.0:
            raise ValueError(f"hard_negative_fraction and word_heads must be in [0, 1] (got "
                             f"{hard_negative_fraction}, {word_heads})")
        self.builder = StreamBuilder(dataset, keywords, cfg)
        self.clips = [rel for rel, _ in dataset.items if rel is not None]
        self.hard_clips = [rel for rel in self.clips if _word_of(rel) in hard_negatives]
        bad = sorted(set(hard_negatives) & set(keywords)) + \
            sorted(set(hard_negatives) - {_word_of(rel) for rel in self.clips})
        if bad:
            raise ValueError(f"hard negatives must be words of the {dataset.subset} split that are not keywords; "
                             f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not (keywords: {', '.join(keywords)})")
        self.hard_negative_fraction, self.word_heads = hard_negative_fraction, word_heads
        self.classes = labels_for(labels)
        self.keywords, self.window_s, self.context_s = keywords, window_s, context_s
        self.seed, self.epoch, self.skip_bad_files = seed, 0, skip_bad_files

    def __len__(self) -> int:
        return len(self.clips)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def labels_present(self) -> set[int]:
        """The label indices these windows can have: the classes with clips, ``_unknown_`` and ``_silence_``."""
        words = {_word_of(rel) for rel in self.clips} & set(self.classes)
        return {self.classes.index(w) for w in words} | {self.classes.index(UNKNOWN), self.classes.index(SILENCE)}

    def _label(self, word: str) -> int:
        return self.classes.index(word if word in self.classes else UNKNOWN)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            audio, label, _ = self.window(index)
        except AudioFileError:
            if self.skip_bad_files:
                return None
            raise
        return torch.from_numpy(audio), label

    def window(self, index: int) -> tuple[np.ndarray, int, list[Occurrence]]:
        """Item ``index`` with the words placed in it (times in seconds from the excerpt's start)."""
        rng = np.random.default_rng([self.seed, 7, self.epoch, index])
        total = self.context_s + self.window_s
        audio = self.builder.bed(int(total * SAMPLE_RATE), rng)
        start = self.context_s  # the window is [start, total)
        words: list[Occurrence] = []
        kind = rng.uniform()
        if kind < 0.1:
            label = self.classes.index(SILENCE)
        elif kind < 0.3:  # the tail of a word that began before the window
            other = self.clips[int(rng.integers(len(self.clips)))]
            words.append(self._place(audio, other, start + self._tail(other, 0.5, rng)))
            label = self.classes.index(UNKNOWN)
        else:  # half of the time a keyword, so that each keyword is seen about as often as _unknown_ words
            keyword = rng.uniform() < 0.5
            rel = self.builder.keyword_clips[int(rng.integers(len(self.builder.keyword_clips)))] if keyword \
                else self._other_word(index, rng)
            length = self.builder.word(rel)[2]
            end = total - rng.uniform(0.0, self.window_s / 2)
            if self.word_heads and _word_of(rel) not in self.keywords and rng.uniform() < self.word_heads:
                end = total + rng.uniform(0.2, 0.9) * length   # 10-80 % of the word heard by the window's end
                words.append(self._place(audio, rel, end))
                label = self.classes.index(UNKNOWN)
            else:
                words.append(self._place(audio, rel, max(start + length, end)))
                label = self._label(_word_of(rel))
            if rng.uniform() < 0.5:  # an earlier word whose tail reaches into the window
                other = self.clips[int(rng.integers(len(self.clips)))]
                tail_end = min(words[0].start - 0.05, start + self._tail(other, 0.4, rng))
                words.insert(0, self._place(audio, other, tail_end))
        return np.clip(audio, -1.0, 1.0), label, words

    def _other_word(self, index: int, rng: np.random.Generator) -> str:
        """The clip of a window that does not draw a keyword: a hard negative now and then, else clip ``index``."""
        if self.hard_clips and rng.uniform() < self.hard_negative_fraction:
            return self.hard_clips[int(rng.integers(len(self.hard_clips)))]
        return self.clips[index]

    def _tail(self, rel: str, longest: float, rng: np.random.Generator) -> float:
        """How far (s) the word of ``rel`` may reach into the window and still have begun before it."""
        length = self.builder.word(rel)[2]
        return rng.uniform(0.0, min(longest, 0.9 * length))

    def _place(self, audio: np.ndarray, rel: str, end_s: float) -> Occurrence:
        """Add clip ``rel``'s word so that it ends at ``end_s`` seconds, cutting what falls outside ``audio``."""
        piece, lead, length = self.builder.word(rel)
        begin = int(round((end_s - length - lead) * SAMPLE_RATE))
        lo, hi = max(0, begin), min(len(audio), begin + len(piece))
        if hi > lo:
            audio[lo:hi] += piece[lo - begin:hi - begin]
        return Occurrence(round(end_s - length, 4), round(end_s, 4), _word_of(rel))


class WindowSets(ConcatDataset):
    """Window datasets (:class:`StreamWindows`, :class:`streamlmu.data.phrases.PhraseWindows`) as one: ``set_epoch``
    and ``labels_present`` reach every part."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)

    def labels_present(self) -> set[int]:
        return set().union(*(part.labels_present() for part in self.datasets))
