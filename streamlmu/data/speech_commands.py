"""Speech Commands v2 (Warden, 2018) in its published folder layout: 35 words, or the 12-label task.

Layout under ``root``::

    <word>/<speaker>_nohash_<n>.wav     1 s, 16 kHz mono clips, one folder per word
    validation_list.txt, testing_list.txt   relative paths of the held-out clips
    _background_noise_/*.wav            long noise recordings

The real corpus comes from ``SCV2_URL``; ``streamlmu synth-speech-commands``
writes a synthetic one in the same layout. The 12-label task keeps ``yes, no,
up, down, left, right, on, off, stop, go``, maps every other word to
``_unknown_`` and adds ``_silence_`` clips cut from the background noise.

A sample is ``(waveform (16000,) float32, label index)``. Clips are read with
``soundfile``, mixed to mono, resampled to 16 kHz if needed and padded or
cropped to 1 s.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchaudio.functional import resample

SCV2_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
WORDS_35 = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
            "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
            "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")
WORDS_10 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
LABEL_TASKS = (35, 12, 37)  # see labels_for
BACKGROUND = "_background_noise_"
SUBSETS = ("training", "validation", "testing")
SAMPLE_RATE = 16000


class AudioFileError(ValueError):
    """A clip that cannot be used; the message names the file and what is wrong with it."""


def labels_for(task: int) -> tuple[str, ...]:
    """Class names of a task, in label-index order: 35 words; 12 (10 words + ``_unknown_`` + ``_silence_``);
    37, the continuous spotter's (every word its own class, then ``_unknown_`` for the tail of a word and
    ``_silence_``)."""
    if task == 35:
        return WORDS_35
    if task == 12:
        return WORDS_10 + (UNKNOWN, SILENCE)
    if task == 37:
        return WORDS_35 + (UNKNOWN, SILENCE)
    raise ValueError(f"labels must be 35, 12 or 37 (got {task!r})")


def read_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """A WAV (or other soundfile format) as mono float32 ``(samples,)`` at ``sample_rate``."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as err:
        raise AudioFileError(f"{path}: not a readable audio file ({err})") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no samples")
    wave = torch.from_numpy(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0])
    if not torch.isfinite(wave).all():
        raise AudioFileError(f"{path}: samples contain NaN or Inf")
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
    return wave


def fit_length(wave: Tensor, samples: int = SAMPLE_RATE) -> Tensor:
    """Zero-pad at the end or crop to ``samples``."""
    if wave.shape[-1] >= samples:
        return wave[..., :samples]
    return torch.nn.functional.pad(wave, (0, samples - wave.shape[-1]))


def check_layout(root: str | Path) -> Path:
    """``root`` as a Path, or an error that says what layout is expected and where SCv2 comes from."""
    root = Path(root)
    expected = (f"expected the Speech Commands v2 layout: one folder per word (e.g. {root / 'yes'}/*.wav), "
                f"validation_list.txt and testing_list.txt. Download the real corpus from {SCV2_URL} "
                f"or generate a synthetic one with `streamlmu synth-speech-commands --out {root}`")
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; {expected}")
    missing = [name for name in ("validation_list.txt", "testing_list.txt") if not (root / name).is_file()]
    words = [w for w in WORDS_35 if (root / w).is_dir()]
    if missing or not words:
        what = ", ".join(missing + ([] if words else ["word folders"]))
        raise FileNotFoundError(f"{root} lacks {what}; {expected}")
    return root


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


class SpeechCommands(Dataset):
    """One subset of SCv2 for the 35- or 12-label task.

    Args:
        root: the corpus folder (see the module docstring).
        subset: ``"training"``, ``"validation"`` or ``"testing"``.
        labels: 35 or 12.
        silence_fraction: 12-label task: ``_silence_`` clips added, as a fraction of the word clips.
        unknown_fraction: 12-label task: ``_unknown_`` clips kept, as a fraction of the word clips
            (None keeps them all).
        noise_probability, noise_volume: training only: how often background noise is
            mixed into a clip, and its largest gain.
        skip_bad_files: return ``None`` for an unreadable clip instead of raising;
            :func:`collate` drops and counts those.
        seed: picks the unknown and silence clips (fixed per subset) and, with
            the sample index and ``epoch``, the noise of each training sample.
        cache_audio: keep every clip once read (64 kB each, 1 s of float32) instead of
            decoding its file again every epoch (each DataLoader worker keeps its own).
    """

    def __init__(self, root: str | Path, subset: str = "training", labels: int = 35,
                 silence_fraction: float = 0.1, unknown_fraction: float | None = 0.1,
                 noise_probability: float = 0.8, noise_volume: float = 0.1,
                 skip_bad_files: bool = False, seed: int = 0, cache_audio: bool = False):
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS} (got {subset!r})")
        if labels not in (35, 12):
            raise ValueError(f"clips come with 35 or 12 labels (got {labels!r}); 37 is for stream windows")
        self.classes = labels_for(labels)
        self.root = check_layout(root)
        self.subset, self.labels = subset, labels
        self.noise_probability = noise_probability if subset == "training" else 0.0
        self.noise_volume = noise_volume
        self.skip_bad_files = skip_bad_files
        self.seed, self.epoch = seed, 0
        self.noises = self._read_noises()
        self._cache: dict[str, Tensor] | None = {} if cache_audio else None

        held_out = {name: _read_list(self.root / f"{name}_list.txt") for name in ("validation", "testing")}
        rng = np.random.default_rng([seed, SUBSETS.index(subset)])
        known, unknown = [], []
        for word in WORDS_35:
            for path in sorted((self.root / word).glob("*.wav")) if (self.root / word).is_dir() else []:
                rel = f"{word}/{path.name}"
                which = next((name for name, items in held_out.items() if rel in items), "training")
                if which != subset:
                    continue
                if labels == 35 or word in WORDS_10:
                    known.append((rel, self.classes.index(word)))
                else:
                    unknown.append((rel, self.classes.index(UNKNOWN)))
        if labels == 12 and unknown_fraction is not None:
            keep = min(len(unknown), math.ceil(unknown_fraction * len(known)))
            unknown = [unknown[i] for i in sorted(rng.choice(len(unknown), keep, replace=False))]
        self.items: list[tuple[str | None, int]] = known + unknown
        if labels == 12:
            if not self.noises:
                raise FileNotFoundError(f"{self.root / BACKGROUND} holds no noise recordings; the 12-label task "
                                        f"cuts its {SILENCE} clips from them")
            self.items += [(None, self.classes.index(SILENCE))] * math.ceil(silence_fraction * len(known))

    def _read_noises(self) -> list[Tensor]:
        folder = self.root / BACKGROUND
        noises = []
        for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
            wave = read_audio(path)
            if wave.shape[0] >= SAMPLE_RATE:
                noises.append(wave)
        return noises

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Training: draw other noise for the same index (call once per epoch)."""
        self.epoch = epoch

    def _noise(self, rng: np.random.Generator) -> Tensor:
        noise = self.noises[int(rng.integers(len(self.noises)))]
        start = int(rng.integers(noise.shape[0] - SAMPLE_RATE + 1))
        return noise[start:start + SAMPLE_RATE]

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        rel, label = self.items[index]
        # Training draws new noise every epoch; held-out subsets are the same every time.
        epoch = self.epoch if self.subset == "training" else 0
        rng = np.random.default_rng([self.seed, SUBSETS.index(self.subset), epoch, index])
        if rel is None:  # _silence_: background noise at a random volume
            return self._noise(rng) * float(rng.uniform(0.0, 1.0)), label
        try:
            wave = self._clip(rel)
        except AudioFileError:
            if not self.skip_bad_files:
                raise
            return None
        if self.noises and rng.uniform() < self.noise_probability:
            wave = wave + self._noise(rng) * float(rng.uniform(0.0, self.noise_volume))
        return wave, label

    def _clip(self, rel: str) -> Tensor:
        """The 1 s clip of file ``rel``: ``(16000,)`` float32 (read once with ``cache_audio``)."""
        if self._cache is None:
            return fit_length(read_audio(self.root / rel))
        wave = self._cache.get(rel)
        if wave is None:
            wave = self._cache[rel] = fit_length(read_audio(self.root / rel)).clone()  # not a view of a longer file
        return wave


def collate(batch: list[tuple[Tensor, int] | None]) -> tuple[Tensor, Tensor, int]:
    """Stack samples into ``(waves (B, 16000), labels (B,), skipped)``, dropping unreadable clips."""
    good = [item for item in batch if item is not None]
    if not good:
        return torch.zeros(0, SAMPLE_RATE), torch.zeros(0, dtype=torch.long), len(batch)
    waves = torch.stack([w for w, _ in good])
    return waves, torch.tensor([label for _, label in good]), len(batch) - len(good)
