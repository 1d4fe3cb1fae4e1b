"""Streams of ordinary sentences with keywords inside them, with every word's time (:class:`PhraseStreamBuilder`).

People say keywords in phrases ("turn *left* at the next corner"), between
words the spotter never trained on. Word streams (:mod:`streamlmu.data.streams`)
lay cut-out words one after another; phrase streams instead have sentences of
:data:`KEYWORD_SENTENCES` (written for this project; every one holds a
keyword) and :data:`PLAIN_SENTENCES` (none does) said whole by a speaker of one
split of a synthetic corpus (training windows and evaluation streams have
sentences of their own): its engine, voice, variant, vocal-tract length and
pitch from ``metadata.csv``, at a random rate, through a simulated room most of
the time and a microphone or telephone channel, over the split's background
noise, with pauses between sentences. The truth holds every word, so a keyword
counts wherever it is said, in any sense ("that is *right*").

Shapes: a stream is float32 ``(samples,)`` at 16 kHz; times are seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from streamlmu.data import acoustics
from streamlmu.data.speech_commands import SAMPLE_RATE, UNKNOWN, WORDS_10, SpeechCommands, labels_for
from streamlmu.data.streams import Occurrence, background_bed
from streamlmu.data.synth import pitched_audio, read_metadata, scale_spectrum, speech_span
from streamlmu.data.voices import TIMELESS_ENGINES, Prosody, Voice, synthesize

_TRAINING_KEYWORD = (
    "yes please turn the music up", "no i want the blue one", "can you turn the volume down a little",
    "turn left at the next corner", "take the second road to the right", "switch the kitchen lights on",
    "please turn the heating off", "stop the video please", "go back to the first page",
    "yes that sounds good to me", "no thank you i am fine", "look up at the sky tonight",
    "the cat jumped down quickly", "keep left and then go straight ahead", "that answer was right",
    "leave the radio on while we eat", "we got off the train at nine", "please stop talking so loudly",
    "let us go outside", "i think the answer is yes", "there is no milk left",
    "pick up the phone when it rings", "sit down and have some tea", "my left hand is cold",
    "right now i am busy", "is the oven on", "turn it off before you leave", "the bus will stop near the school",
    "you can go now", "yes we can start the meeting", "move the picture up by one inch",
    "write it down on paper", "the shop is on your left", "put your coat on", "the lamp fell off the shelf",
    "stop right there", "go to sleep now", "no way", "scroll down to the bottom", "turn right after the bridge",
    "wake up early tomorrow", "please go ahead", "is it left or right", "yes of course",
)
_TRAINING_PLAIN = (
    "the weather is lovely this morning", "where did you put my keys", "i would like a cup of coffee",
    "she reads a book every evening", "the children are playing outside", "what time does the train leave",
    "we had pasta for dinner", "my brother lives in a small town", "could you open the window please",
    "the meeting starts at ten", "he forgot his umbrella again", "this song reminds me of summer",
    "how was your day", "the market closes early today", "i need to buy some bread",
    "they painted the fence yellow", "the dog is sleeping by the door", "learn a new word every day",
    "a bird is singing outside", "follow the path to the lake", "the house has three bedrooms",
    "happy birthday to you", "seven people came to the party", "we will visit the museum",
    "that old tree is very tall", "forward this letter to my mother", "please wait for me here",
    "the baby laughed at the clown", "turn the page and keep reading", "a warm bath helps me relax",
)


_EVALUATION_KEYWORD = (
    "yes i will be there soon", "yes the door is open", "no the shop was closed", "no tickets are left",
    "hold the handle and pull it up", "the price went up again", "slow down near the school",
    "the sun sets down by the sea", "the keys are on your left", "he left early this morning",
    "you are right about that", "open the second door on your right", "the radio is still on",
    "leave the light on tonight", "switch the fan off please", "the cup fell off", "we stop here at noon",
    "please stop that noise", "where did the children go", "go and ask your teacher", "i said no twice",
    "get up and dance", "turn it down please", "the next stop is mine", "can we go home now",
    "take your shoes off", "my phone is on silent", "yes please", "lie down and rest", "the right answer is seven",
)
_EVALUATION_PLAIN = (
    "the soup needs more salt", "my sister plays the piano", "we met at the library", "the garden looks beautiful",
    "what is your favourite colour", "the river is very wide here", "i lost my wallet yesterday",
    "the film starts at eight", "she bought a new bicycle", "please close the curtains", "the bread is still warm",
    "our neighbours have a big dog", "he is learning to swim", "the bird flew over the house", "tell me a story",
    "the printer needs paper", "my grandmother grows tomatoes", "we had a wonderful evening",
    "five apples and two pears", "the wind is cold today",
)
# Sentences by split: training windows use their own, validation and test streams others, so that a spotter
# cannot score by knowing the sentences around the keywords.
KEYWORD_SENTENCES = {"training": _TRAINING_KEYWORD, "validation": _EVALUATION_KEYWORD, "testing": _EVALUATION_KEYWORD}
PLAIN_SENTENCES = {"training": _TRAINING_PLAIN, "validation": _EVALUATION_PLAIN, "testing": _EVALUATION_PLAIN}


@dataclass(frozen=True)
class PhraseConfig:
    """How phrase streams are laid out and heard; ranges are ``(low, high)``, drawn uniformly."""

    seconds: float = 300.0
    keyword_sentence_fraction: float = 0.6
    pause_s: tuple[float, float] = (0.6, 2.5)
    long_pause_probability: float = 0.1
    long_pause_s: tuple[float, float] = (4.0, 12.0)
    rate: tuple[float, float] = (0.8, 1.25)          # speaking rate, a factor of the voice's default
    peak_db: tuple[float, float] = (-26.0, -3.0)     # each sentence's peak level
    room_probability: float = 0.7
    rooms: int = 8                                   # impulse responses simulated per builder
    rt60_s: tuple[float, float] = (0.1, 0.6)
    distance_m: tuple[float, float] = (0.2, 2.0)
    channel_weights: tuple[float, float, float] = (0.35, 0.5, 0.15)  # flat, mic, telephone
    noise_dbfs: tuple[float, float] = (-60.0, -40.0)  # RMS level of the background bed
    batch: int = 16                                   # sentences synthesized per engine call


@dataclass(frozen=True)
class Speaker:
    """A voice as one speaker of a corpus says it: vocal-tract length factor ``vtl``, pitch and range factors."""

    voice: Voice
    vtl: float = 1.0
    pitch: float = 1.0
    range: float = 1.0


Plan = tuple[Speaker, tuple[str, ...], Prosody]  # who says which words, how


def split_speakers(dataset: SpeechCommands) -> list[Speaker]:
    """The speakers of ``dataset``'s split, from its corpus's ``metadata.csv`` (one clip of each stands for it),
    except those of the engines that tell no word times (DECtalk, Kokoro)."""
    rows = [row for row in read_metadata(dataset.root).values() if row["split"] == dataset.subset]
    if not rows:
        raise ValueError(f"phrase streams need a synthetic corpus whose metadata.csv lists the speakers of its "
                         f"{dataset.subset} split (streamlmu synth-speech-commands writes one); {dataset.root} "
                         f"has none")
    rows = [row for row in rows if row["engine"] not in TIMELESS_ENGINES]
    if not rows:
        raise ValueError(f"phrase streams need word times, which {' and '.join(TIMELESS_ENGINES)} do not tell: the "
                         f"{dataset.subset} split of {dataset.root} has their voices alone (word streams work)")
    first = {}
    for row in rows:
        first.setdefault(row["speaker"], row)
    return [Speaker(Voice(row["engine"], row["voice"], row["variant"]), float(row["vtl"] or 1.0),
                    float(row["pitch"] or 1.0), float(row["range"] or 1.0)) for _, row in sorted(first.items())]


class PhraseStreamBuilder:
    """Builds phrase streams said by the speakers of ``dataset`` (a split of a synthetic corpus)."""

    def __init__(self, dataset: SpeechCommands, keywords: tuple[str, ...], cfg: PhraseConfig = PhraseConfig(),
                 seed: int = 0):
        self.cfg, self.keywords = cfg, keywords
        self.speakers = split_speakers(dataset)
        self.noises = [n.numpy() for n in dataset.noises]
        self.keyword_sentences = [s.split() for s in KEYWORD_SENTENCES[dataset.subset]
                                  if set(s.split()) & set(keywords)]
        if not self.keyword_sentences:
            raise ValueError(f"no sentence holds any of the keywords {', '.join(keywords)}")
        self.plain_sentences = [s.split() for s in PLAIN_SENTENCES[dataset.subset]
                                if not set(s.split()) & set(keywords)]
        rng = np.random.default_rng([seed, 11])
        self.rirs = [acoustics.impulse_response(acoustics.draw_room(rng, cfg.rt60_s, cfg.distance_m))
                     for _ in range(cfg.rooms)]

    def plan(self, rng: np.random.Generator) -> Plan:
        """A sentence (one with a keyword ``cfg.keyword_sentence_fraction`` of the time), its speaker and prosody."""
        pool = self.keyword_sentences if rng.uniform() < self.cfg.keyword_sentence_fraction or \
            not self.plain_sentences else self.plain_sentences
        words = tuple(pool[int(rng.integers(len(pool)))])
        speaker = self.speakers[int(rng.integers(len(self.speakers)))]
        return speaker, words, Prosody(float(rng.uniform(*self.cfg.rate)), speaker.pitch, speaker.range)

    def say(self, plans: list[Plan]) -> list[tuple[np.ndarray, list[tuple[float, float]]]]:
        """Each planned sentence as its speaker says it, dry, and each word's ``(start, end)`` in seconds."""
        said = []
        for (speaker, _, prosody), speech in zip(plans, synthesize([(s.voice, w, p) for s, w, p in plans])):
            audio = pitched_audio(speech, prosody.pitch)
            spans = []
            for start, end in speech.spans:  # the engine's span of a word may run on into the pause after it
                lo, hi = int(start * SAMPLE_RATE), min(len(audio), int(end * SAMPLE_RATE))
                first, last = speech_span(audio[lo:hi]) if hi > lo else (0, 0)
                spans.append(((lo + first) / SAMPLE_RATE, (lo + last) / SAMPLE_RATE))
            scaled = scale_spectrum(audio, speaker.vtl)
            stretch = len(scaled) / max(len(audio), 1)
            said.append((scaled, [(a * stretch, b * stretch) for a, b in spans]))
        return said

    def hear(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A dry sentence as the stream's microphone hears it: a room most of the time (0.3 s longer, for its
        tail), a channel, a level."""
        audio = np.concatenate([audio, np.zeros(int(0.3 * SAMPLE_RATE), np.float32)])
        if rng.uniform() < self.cfg.room_probability:
            audio = acoustics.reverberate(audio, self.rirs[int(rng.integers(len(self.rirs)))])
        audio = acoustics.apply_channel(audio, acoustics.draw_weighted_channel(self.cfg.channel_weights, rng))
        return (audio * 10 ** (rng.uniform(*self.cfg.peak_db) / 20) / (np.abs(audio).max() + 1e-9)).astype(np.float32)

    def build(self, seed: int) -> tuple[np.ndarray, list[Occurrence]]:
        """One stream of ``cfg.seconds`` and every word said in it; the same seed gives the same stream."""
        cfg = self.cfg
        rng = np.random.default_rng([seed, 12])
        samples = int(cfg.seconds * SAMPLE_RATE)
        audio = background_bed(self.noises, samples, cfg.noise_dbfs, rng)
        truth: list[Occurrence] = []
        t = rng.uniform(*cfg.pause_s)
        while True:
            plans = [self.plan(rng) for _ in range(cfg.batch)]
            for (_, words, _), (dry, spans) in zip(plans, self.say(plans)):
                piece = self.hear(dry, rng)
                begin = int(t * SAMPLE_RATE)
                if begin + len(piece) > samples:
                    return np.clip(audio, -1.0, 1.0), truth
                audio[begin:begin + len(piece)] += piece
                truth += [Occurrence(round(t + a, 4), round(t + b, 4), word) for word, (a, b) in zip(words, spans)]
                t = (begin + len(piece)) / SAMPLE_RATE
                long = rng.uniform() < cfg.long_pause_probability
                t += rng.uniform(*(cfg.long_pause_s if long else cfg.pause_s))


class PhraseWindows(Dataset):
    """Training windows cut from phrase streams, labelled as a live spotter should answer at the window's end.

    Each item is ``context_s + window_s`` seconds: a sentence of a pool of
    ``sentences`` (default: ``count``, at most 1024) said by the split's speakers (heard anew in every epoch:
    room, channel, level, background) that ends 0 to ``window_s / 2`` after
    one of its words, a keyword of the sentence half of the time. Label: the
    keyword that ends last in the window's last half and lies wholly in the
    window, or is being said with 70 % of it heard; else ``_unknown_``. (No
    ``_silence_``: mix these with :class:`streamlmu.data.streams.StreamWindows`.)

    Shapes: waveform ``(samples,)`` float32 at 16 kHz.
    """

    def __init__(self, dataset: SpeechCommands, keywords: tuple[str, ...] = WORDS_10, count: int = 4096,
                 sentences: int | None = None, window_s: float = 1.0, context_s: float = 1.0, seed: int = 0,
                 cfg: PhraseConfig = PhraseConfig(), progress: bool = False):
        sentences = min(count, 1024) if sentences is None else sentences
        if count < 1 or sentences < 1:
            raise ValueError(f"count and sentences must be >= 1 (got {count}, {sentences})")
        self.builder = PhraseStreamBuilder(dataset, keywords, cfg, seed)
        self.classes = labels_for(12)
        self.keywords, self.count, self.window_s, self.context_s = keywords, count, window_s, context_s
        self.seed, self.epoch = seed, 0
        rng = np.random.default_rng([seed, 14])
        plans = [self.builder.plan(rng) for _ in range(sentences)]
        self.pool: list[tuple[np.ndarray, list[Occurrence]]] = []
        for first in tqdm(range(0, sentences, cfg.batch), desc="phrase windows: sentences", unit="batch",
                          disable=not progress):
            batch = plans[first:first + cfg.batch]
            for (_, words, _), (dry, spans) in zip(batch, self.builder.say(batch)):
                self.pool.append((dry, [Occurrence(a, b, w) for w, (a, b) in zip(words, spans)]))

    def __len__(self) -> int:
        return self.count

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def labels_present(self) -> set[int]:
        """The label indices these windows can have: the keywords and ``_unknown_``."""
        return {self.classes.index(k) for k in self.keywords if k in self.classes} | {self.classes.index(UNKNOWN)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        audio, label, _ = self.window(index)
        return torch.from_numpy(audio), label

    def window(self, index: int) -> tuple[np.ndarray, int, list[Occurrence]]:
        """Item ``index`` with the words in it (times in seconds from the window's start)."""
        rng = np.random.default_rng([self.seed, 15, self.epoch, index])
        dry, words = self.pool[int(rng.integers(len(self.pool)))]
        keywords = [w for w in words if w.word in self.keywords]
        target = keywords[int(rng.integers(len(keywords)))] if keywords and rng.uniform() < 0.5 \
            else words[int(rng.integers(len(words)))]
        heard = self.builder.hear(dry, rng)
        total = self.context_s + self.window_s
        samples = int(total * SAMPLE_RATE)
        audio = background_bed(self.builder.noises, samples, self.builder.cfg.noise_dbfs, rng)
        offset = total - (target.end + rng.uniform(0.0, self.window_s / 2))  # the sentence's start in the window
        begin = int(round(offset * SAMPLE_RATE))
        lo, hi = max(0, begin), min(samples, begin + len(heard))
        audio[lo:hi] += heard[lo - begin:hi - begin]
        placed = [Occurrence(round(w.start + offset, 4), round(w.end + offset, 4), w.word) for w in words
                  if w.end + offset > 0 and w.start + offset < total]
        label = self.classes.index(UNKNOWN)
        for w in placed:
            done = self.context_s <= w.start and total - self.window_s / 2 < w.end <= total
            underway = w.start < total < w.end and total - w.start >= 0.7 * (w.end - w.start)
            if w.word in self.keywords and (done or underway):
                label = self.classes.index(w.word)
        return np.clip(audio, -1.0, 1.0), label, placed
