"""Acoustic conditions for synthetic speech: rooms, microphones and channels, clipping, background noise.

* Rooms: impulse responses of shoebox rooms simulated by the image-source
  method (pyroomacoustics), from a room size, a reverberation time (RT60,
  walls' absorption from Sabine's formula) and source and microphone
  positions; :func:`reverberate` convolves a signal with one, aligned so that
  the direct sound keeps the signal's timing.
* Channels (:data:`CHANNELS`): ``flat``; ``mic`` a microphone and its
  amplifier, random peaking equalisers, a high-pass and a low-pass; ``telephone``
  300-3400 Hz, 8 kHz sampling and 8-bit mu-law.
* Clipping: a gain into hard limits (an overdriven input).
* Noise (:data:`NOISES`): white, pink, brown, mains hum, and babble of
  synthetic talkers, mixed at a signal-to-noise ratio.

Everything takes its parameters explicitly (drawn by the caller from a seeded
generator), so a corpus is a function of its seed.

Shapes: signals float32 ``(samples,)`` at 16 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

SAMPLE_RATE = 16000
CHANNELS = ("flat", "mic", "telephone")
NOISES = ("white", "pink", "brown", "hum", "babble")
# Words for babble: common words that are not among the 35 commands.
BABBLE_WORDS = ("the", "water", "people", "morning", "because", "little", "number", "about", "window", "paper",
                "music", "garden", "table", "before", "after", "something", "today", "evening", "yellow",
                "market", "station", "really", "around", "money", "letter", "family", "picture", "question")
SPEED_OF_SOUND = 343.0


# ------------------------------------------------------------------ rooms
@dataclass(frozen=True)
class Room:
    """A shoebox room: ``size`` (x, y, z) in metres, reverberation time ``rt60`` in seconds, ``source`` and
    ``microphone`` positions in metres."""

    size: tuple[float, float, float]
    rt60: float
    source: tuple[float, float, float]
    microphone: tuple[float, float, float]

    @property
    def distance(self) -> float:
        """Source to microphone, metres."""
        return float(np.linalg.norm(np.subtract(self.source, self.microphone)))


def draw_room(rng: np.random.Generator, rt60_s: tuple[float, float] = (0.15, 0.8),
              distance_m: tuple[float, float] = (0.3, 4.0)) -> Room:
    """A random room: 3-10 x 2.5-8 x 2.4-4 m, RT60 from ``rt60_s`` (at least what the room can have: a large room
    cannot be very dry), talker and microphone at least 0.5 m from the walls, ``distance_m`` apart where the room
    allows."""
    size = (float(rng.uniform(3, 10)), float(rng.uniform(2.5, 8)), float(rng.uniform(2.4, 4)))
    low, high = np.array([0.5, 0.5, 1.0]), np.array(size) - [0.5, 0.5, 0.6]
    source = rng.uniform(low, high)
    target = rng.uniform(*distance_m)
    for _ in range(20):  # a direction whose point at the wanted distance lies in the room
        direction = rng.standard_normal(3) * [1, 1, 0.2]
        mic = source + target * direction / np.linalg.norm(direction)
        if (mic >= low).all() and (mic <= high).all():
            break
    else:
        mic = rng.uniform(low, high)
    volume = size[0] * size[1] * size[2]
    surface = 2 * (size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    shortest = 1.2 * 0.161 * volume / surface  # Sabine's formula with walls that absorb almost everything
    rt60 = max(float(rng.uniform(*rt60_s)), shortest)
    return Room(size, rt60, tuple(map(float, source)), tuple(map(float, mic)))


def impulse_response(room: Room, max_order: int = 60) -> np.ndarray:
    """The room's impulse response at 16 kHz, float32, its direct sound at index 0 and peak 1."""
    import pyroomacoustics as pra

    absorption, order = pra.inverse_sabine(room.rt60, list(room.size))
    shoebox = pra.ShoeBox(list(room.size), fs=SAMPLE_RATE, materials=pra.Material(absorption),
                          max_order=min(order, max_order))
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.microphone))
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], np.float64)
    direct = int(np.argmax(np.abs(rir) > 0.5 * np.abs(rir).max()))  # the first strong arrival
    rir = rir[direct:]
    return (rir / np.abs(rir).max()).astype(np.float32)


def reverberate(signal: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``signal`` in the room (same length; the direct sound keeps the signal's timing)."""
    return fftconvolve(signal, rir)[:len(signal)].astype(np.float32)


# ------------------------------------------------------------------ channels
def _peaking(frequency_hz: float, gain_db: float, q: float) -> np.ndarray:
    """A peaking-equaliser biquad (the Audio EQ Cookbook's) as one second-order section."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * frequency_hz / SAMPLE_RATE
    alpha = np.sin(w) / (2 * q)
    b0, b1, b2 = 1 + alpha * a, -2 * np.cos(w), 1 - alpha * a
    a0, a1, a2 = 1 + alpha / a, -2 * np.cos(w), 1 - alpha / a
    return np.array([b0 / a0, b1 / a0, b2 / a0, 1.0, a1 / a0, a2 / a0])


@dataclass(frozen=True)
class Channel:
    """A microphone and line: ``kind`` in :data:`CHANNELS`; for ``mic``, ``peaks`` (frequency Hz, gain dB, Q),
    ``highpass_hz`` and ``lowpass_hz``."""

    kind: str = "flat"
    peaks: tuple[tuple[float, float, float], ...] = ()
    highpass_hz: float = 0.0
    lowpass_hz: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CHANNELS:
            raise ValueError(f"channel kind must be one of {CHANNELS} (got {self.kind!r})")


def draw_channel(kind: str, rng: np.random.Generator) -> Channel:
    """A random channel of ``kind``: a mic has two or three +-9 dB peaks, a high-pass at 40-300 Hz and a low-pass
    at 3.5-7.5 kHz."""
    if kind != "mic":
        return Channel(kind)
    peaks = tuple((float(np.exp(rng.uniform(np.log(150), np.log(6000)))), float(rng.uniform(-9, 9)),
                   float(rng.uniform(0.7, 3.0))) for _ in range(int(rng.integers(2, 4))))
    return Channel(kind, peaks, float(rng.uniform(40, 300)), float(rng.uniform(3500, 7500)))


def draw_weighted_channel(weights: tuple[float, float, float], rng: np.random.Generator) -> Channel:
    """A random channel whose kind is drawn with ``weights`` over :data:`CHANNELS` (flat, mic, telephone)."""
    kind = CHANNELS[int(rng.choice(len(CHANNELS), p=np.asarray(weights) / sum(weights)))]
    return draw_channel(kind, rng)


def apply_channel(signal: np.ndarray, channel: Channel) -> np.ndarray:
    """``signal`` as heard through ``channel``."""
    x = signal.astype(np.float64)
    if channel.kind == "mic":
        sections = [_peaking(*peak)[None] for peak in channel.peaks]
        sections.append(butter(2, channel.highpass_hz, "highpass", fs=SAMPLE_RATE, output="sos"))
        sections.append(butter(4, channel.lowpass_hz, "lowpass", fs=SAMPLE_RATE, output="sos"))
        x = sosfilt(np.vstack(sections), x)
    elif channel.kind == "telephone":
        x = sosfilt(butter(4, (300, 3400), "bandpass", fs=SAMPLE_RATE, output="sos"), x)
        narrow = resample_poly(x, 1, 2)
        peak = np.abs(narrow).max() + 1e-12
        mu = 255.0
        coded = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
        coded = np.round(coded * 127) / 127  # 8-bit mu-law
        narrow = peak * np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu
        x = resample_poly(narrow, 2, 1)[:len(signal)]
    return x.astype(np.float32)


def clip(signal: np.ndarray, drive_db: float) -> np.ndarray:
    """Amplify by ``drive_db`` into hard limits at the signal's former peak (an overdriven input)."""
    peak = np.abs(signal).max()
    if peak == 0:
        return signal
    return np.clip(signal * 10 ** (drive_db / 20), -peak, peak).astype(np.float32)


# ------------------------------------------------------------------ noise
def colored_noise(rng: np.random.Generator, samples: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples)
    freqs[0] = freqs[1]
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=samples)
    return noise / noise.std()


def hum(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Mains hum at 50 or 60 Hz with six harmonics, a slow wobble and a little hiss."""
    t = np.arange(samples) / SAMPLE_RATE
    mains = rng.choice([50.0, 60.0])
    wobble = 1 + 0.2 * np.sin(2 * np.pi * 0.3 * t)
    tone = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8)) * wobble
    return tone + 0.05 * rng.standard_normal(samples)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + noise`` with the noise scaled to ``snr_db`` below the speech's RMS (over their common length)."""
    speech_rms = np.sqrt(np.mean(speech.astype(np.float64) ** 2)) + 1e-9
    noise_rms = np.sqrt(np.mean(noise.astype(np.float64) ** 2)) + 1e-9
    return (speech + noise * (speech_rms / noise_rms) * 10 ** (-snr_db / 20)).astype(np.float32)
