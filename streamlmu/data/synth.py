"""A synthetic Speech Commands v2 corpus spoken by ``espeak-ng``, in the real corpus's layout.

Each clip is one of the 35 words spoken by a "speaker" (an espeak-ng English
voice with one of its variants) at a random speed and pitch, placed at a
random onset inside 1 s, scaled to a random peak level and, most of the time,
mixed with a generated background noise at a random SNR. Generated noises
(white, pink, brown, mains hum, babble of espeak-ng speech) also fill
``_background_noise_/``. Splits follow SCv2's rule: a clip's speaker hash
decides whether it is in ``validation_list.txt``, ``testing_list.txt`` or
training, so the splits share no speaker.

``metadata.csv`` records each clip's speaker, voice, speed, pitch, noise, SNR
and the word's onset and end in seconds (from the synthesised speech's
envelope), which the real corpus lacks.

Everything is a function of the seed: the same seed writes the same files.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly
from tqdm import tqdm

from streamlmu.data.speech_commands import BACKGROUND, SAMPLE_RATE, WORDS_35

VOICES = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
NOISES = ("white", "pink", "brown", "hum", "babble")
# Words for babble: common words that are not among the 35 commands.
BABBLE_WORDS = ("the", "water", "people", "morning", "because", "little", "number", "about", "window", "paper",
                "music", "garden", "table", "before", "after", "something", "today", "evening", "yellow",
                "market", "station", "really", "around", "money", "letter", "family", "picture", "question")
_ESPEAK_RATE = 22050
_MAX_HASH = 2 ** 27 - 1  # SCv2's which_set rule


@dataclass(frozen=True)
class SynthConfig:
    """What the generator draws from. Ranges are inclusive ``(low, high)``."""

    clips_per_word: int = 150
    seed: int = 0
    speed_wpm: tuple[int, int] = (110, 230)
    pitch: tuple[int, int] = (15, 85)
    peak_db: tuple[float, float] = (-24.0, -1.0)
    noise_probability: float = 0.8
    snr_db: tuple[float, float] = (5.0, 35.0)
    background_seconds: float = 60.0
    validation_percent: float = 10.0
    testing_percent: float = 10.0


def require_espeak() -> str:
    """The espeak-ng executable, or an error that says how to install it."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng; `make test` installs it)")
    return path


@functools.lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    """The voice variants espeak-ng offers (``m1``, ``f3``, ``Alex``...)."""
    out = subprocess.run([require_espeak(), "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].split("/")[-1] for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return tuple(sorted(set(names)))


def speak(text: str, voice: str, variant: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng speech as float32 ``(samples,)`` at 16 kHz."""
    proc = subprocess.run([require_espeak(), "--stdout", "-v", f"{voice}+{variant}", "-s", str(speed),
                           "-p", str(pitch), text], capture_output=True, check=True)
    data, rate = soundfile.read(io.BytesIO(proc.stdout), dtype="float32")
    if data.ndim > 1:
        data = data.mean(axis=1)
    return resample_poly(data, SAMPLE_RATE, rate).astype(np.float32)


def speech_span(wave: np.ndarray, floor_db: float = -35.0, hop: int = 160) -> tuple[int, int]:
    """``(start, end)`` samples of the part of ``wave`` louder than ``floor_db`` below its loudest 10 ms."""
    frames = len(wave) // hop
    if frames == 0:
        return 0, len(wave)
    energy = (wave[:frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (floor_db / 10))
    return int(loud[0] * hop), int(min(len(wave), (loud[-1] + 1) * hop))


def split_of(speaker: str, validation_percent: float = 10.0, testing_percent: float = 10.0) -> str:
    """SCv2's rule: the SHA-1 of the speaker id places all of a speaker's clips in one subset."""
    value = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (_MAX_HASH + 1)
    percent = value * (100.0 / _MAX_HASH)
    if percent < validation_percent:
        return "validation"
    if percent < validation_percent + testing_percent:
        return "testing"
    return "training"


# ------------------------------------------------------------------ noise
def _colored(rng: np.random.Generator, samples: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=samples)
    return noise / noise.std()


def make_noise(kind: str, seconds: float, seed: int) -> np.ndarray:
    """One background recording, float32 at 16 kHz with peak 0.5."""
    rng = np.random.default_rng([seed, NOISES.index(kind)])
    samples = int(seconds * SAMPLE_RATE)
    if kind in ("white", "pink", "brown"):
        noise = _colored(rng, samples, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    elif kind == "hum":
        t = np.arange(samples) / SAMPLE_RATE
        mains = rng.choice([50.0, 60.0])
        wobble = 1 + 0.2 * np.sin(2 * np.pi * 0.3 * t)
        noise = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8)) * wobble
        noise = noise + 0.05 * rng.standard_normal(samples)
    elif kind == "babble":
        noise = np.zeros(samples)
        variants = espeak_variants()
        for _ in range(8):  # eight talkers over each other
            talker = np.zeros(0, np.float32)
            voice, variant = rng.choice(VOICES), rng.choice(variants)
            while len(talker) < samples:
                sentence = " ".join(rng.choice(BABBLE_WORDS, size=12))
                talker = np.concatenate([talker, speak(sentence, voice, variant, int(rng.integers(140, 200)),
                                                       int(rng.integers(20, 80)))])
            noise += talker[:samples] / (np.abs(talker).max() + 1e-9)
    else:
        raise ValueError(f"noise kind must be one of {NOISES} (got {kind!r})")
    return (0.5 * noise / np.abs(noise).max()).astype(np.float32)


# ------------------------------------------------------------------ clips
@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip (drawn in the main process, rendered in a worker)."""

    word: str
    path: str          # relative to the corpus root
    speaker: str
    voice: str
    variant: str
    speed: int
    pitch: int
    peak_db: float
    onset_fraction: float
    noise: str         # "" for a clean clip
    noise_start: float  # fraction of the noise recording
    snr_db: float


def plan_clips(cfg: SynthConfig, words: tuple[str, ...] = WORDS_35) -> list[ClipPlan]:
    """The corpus's clips in a fixed order; file names follow SCv2 (``<speaker>_nohash_<n>.wav``)."""
    variants = espeak_variants()
    plans, counts = [], {}
    for word in words:
        rng = np.random.default_rng([cfg.seed, WORDS_35.index(word)])
        for _ in range(cfg.clips_per_word):
            voice, variant = str(rng.choice(VOICES)), str(rng.choice(variants))
            speaker = hashlib.sha1(f"{voice}+{variant}".encode()).hexdigest()[:8]
            n = counts[(word, speaker)] = counts.get((word, speaker), -1) + 1
            noisy = rng.uniform() < cfg.noise_probability
            plans.append(ClipPlan(
                word=word, path=f"{word}/{speaker}_nohash_{n}.wav", speaker=speaker, voice=voice,
                variant=variant, speed=int(rng.integers(cfg.speed_wpm[0], cfg.speed_wpm[1] + 1)),
                pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                peak_db=float(rng.uniform(*cfg.peak_db)), onset_fraction=float(rng.uniform()),
                noise=str(rng.choice(NOISES)) if noisy else "", noise_start=float(rng.uniform()),
                snr_db=float(rng.uniform(*cfg.snr_db))))
    return plans


def render_clip(plan: ClipPlan, noises: dict[str, np.ndarray]) -> tuple[np.ndarray, float, float]:
    """The 1 s clip of ``plan`` and the word's ``(onset, end)`` in seconds."""
    speed = plan.speed
    for _ in range(4):  # a word too long for 1 s is spoken faster
        speech = speak(plan.word, plan.voice, plan.variant, speed, plan.pitch)
        start, end = speech_span(speech)
        speech = speech[start:end]
        if len(speech) <= 0.95 * SAMPLE_RATE:
            break
        speed += 40
    speech = speech[:SAMPLE_RATE]
    onset = int(plan.onset_fraction * (SAMPLE_RATE - len(speech)))
    clip = np.zeros(SAMPLE_RATE, np.float32)
    clip[onset:onset + len(speech)] = speech
    if plan.noise:
        noise = noises[plan.noise]
        first = int(plan.noise_start * (len(noise) - SAMPLE_RATE))
        segment = noise[first:first + SAMPLE_RATE]
        speech_rms = np.sqrt(np.mean(speech ** 2)) + 1e-9
        noise_rms = np.sqrt(np.mean(segment ** 2)) + 1e-9
        clip += segment * (speech_rms / noise_rms) * 10 ** (-plan.snr_db / 20)
    clip *= 10 ** (plan.peak_db / 20) / (np.abs(clip).max() + 1e-9)
    return clip, onset / SAMPLE_RATE, (onset + len(speech)) / SAMPLE_RATE


_WORKER_NOISES: dict[str, np.ndarray] = {}


def _init_worker(noises: dict[str, np.ndarray]) -> None:
    _WORKER_NOISES.update(noises)


def _render_and_write(args: tuple[ClipPlan, str]) -> tuple[str, float, float]:
    plan, root = args
    clip, onset, end = render_clip(plan, _WORKER_NOISES)
    soundfile.write(str(Path(root) / plan.path), clip, SAMPLE_RATE, subtype="PCM_16")
    return plan.path, onset, end


METADATA_FIELDS = ("path", "word", "speaker", "voice", "variant", "speed", "pitch", "noise", "snr_db",
                   "onset_s", "end_s", "split")


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), words: tuple[str, ...] = WORDS_35,
             workers: int = 1, progress: bool = True) -> Path:
    """Write the corpus to ``out`` (created; existing clips are overwritten). Returns the root."""
    require_espeak()
    unknown = sorted(set(words) - set(WORDS_35))
    if unknown:
        raise ValueError(f"words must be Speech Commands words; unknown: {unknown}")
    root = Path(out)
    (root / BACKGROUND).mkdir(parents=True, exist_ok=True)
    noises = {}
    for kind in tqdm(NOISES, desc="background noise", disable=not progress):
        noises[kind] = make_noise(kind, cfg.background_seconds, cfg.seed)
        soundfile.write(str(root / BACKGROUND / f"{kind}_noise.wav"), noises[kind], SAMPLE_RATE, subtype="PCM_16")
    plans = plan_clips(cfg, words)
    for word in words:
        (root / word).mkdir(exist_ok=True)
    spans = {}
    jobs = [(plan, str(root)) for plan in plans]
    bar = tqdm(total=len(jobs), desc="clips", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(noises)
        results = map(_render_and_write, jobs)
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(noises,))
        results = pool.map(_render_and_write, jobs, chunksize=16)
    try:
        for path, onset, end in results:
            spans[path] = (onset, end)
            bar.update()
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown()
    splits = {p.path: split_of(p.speaker, cfg.validation_percent, cfg.testing_percent) for p in plans}
    for name in ("validation", "testing"):
        listed = sorted(path for path, split in splits.items() if split == name)
        (root / f"{name}_list.txt").write_text("".join(f"{path}\n" for path in listed))
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        for p in plans:
            writer.writerow(dict(path=p.path, word=p.word, speaker=p.speaker, voice=p.voice, variant=p.variant,
                                 speed=p.speed, pitch=p.pitch, noise=p.noise, snr_db=f"{p.snr_db:.1f}",
                                 onset_s=f"{spans[p.path][0]:.4f}", end_s=f"{spans[p.path][1]:.4f}",
                                 split=splits[p.path]))
    return root


def read_metadata(root: str | Path) -> dict[str, dict[str, str]]:
    """``metadata.csv`` of a synthetic corpus, keyed by relative clip path (empty for the real corpus)."""
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}
