"""``streamlmu synth-speech-commands``: write a synthetic Speech Commands v2 corpus."""
from __future__ import annotations

import argparse
import os
import time

from streamlmu.data.speech_commands import WORDS_35
from streamlmu.data.synth import RECIPES, SynthConfig, generate
from streamlmu.data.voices import ENGINES

DESCRIPTION = """Write a synthetic Speech Commands v2 corpus: the 35 words spoken by many voices.
Recipe "diverse" (default): espeak-ng's English accents and voice variants and Festival's English
voices (and DECtalk's nine voices, Piper's neural voice and Kokoro's five neural voices where
--engines names them), each as several personas (vocal-tract length, pitch register), at random
rate, pitch and pitch range, a third of the words said inside a carrier phrase and cut out; then a
simulated room, a microphone or telephone channel, sometimes clipping, and background noise
(white, pink, brown, hum, babble) at random SNR. Recipe "espeak": espeak-ng alone, without rooms
or channels (the corpus the first bundled models were trained on). Same folder layout, split lists
and file naming as the real corpus (splits by speaker), plus metadata.csv (engine, voice,
conditions, each word's onset and end). Engines that are missing are named, with their package, and
left out. Deterministic for a seed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("--out", required=True, help="corpus folder to write")
    parser.add_argument("--recipe", choices=RECIPES, default=defaults.recipe,
                        help="diverse: many engines, voices, rooms and microphones; espeak: espeak-ng alone")
    parser.add_argument("--clips-per-word", type=int, default=defaults.clips_per_word, help="clips of each word")
    parser.add_argument("--engines", default=",".join(defaults.engines), metavar="ENGINES",
                        help=f"comma-separated engines of the diverse recipe, among {','.join(ENGINES)} (e.g. "
                             f"piper alone: a corpus of an engine a model never heard)")
    parser.add_argument("--testing-percent", type=float, default=defaults.testing_percent,
                        help="share of the speakers in the testing split (100 with --validation-percent 0: every "
                             "clip a test clip)")
    parser.add_argument("--validation-percent", type=float, default=defaults.validation_percent,
                        help="share of the speakers in the validation split")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice")
    parser.add_argument("--words", default=",".join(WORDS_35), help="comma-separated subset of the 35 words")
    parser.add_argument("--background-seconds", type=float, default=defaults.background_seconds,
                        help="length of each generated background-noise recording")
    parser.add_argument("--splits", default=None, metavar="SPLITS",
                        help="comma-separated splits to write (e.g. testing): the same clips the whole corpus has "
                             "there, in a fraction of the time (default: all)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel synthesis processes")


def run(args: argparse.Namespace) -> int:
    if args.clips_per_word < 1:
        raise ValueError(f"--clips-per-word must be >= 1 (got {args.clips_per_word})")
    words = tuple(w.strip() for w in args.words.split(",") if w.strip())
    cfg = SynthConfig(clips_per_word=args.clips_per_word, seed=args.seed, background_seconds=args.background_seconds,
                      recipe=args.recipe, engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
                      validation_percent=args.validation_percent, testing_percent=args.testing_percent)
    start = time.perf_counter()
    splits = tuple(s.strip() for s in args.splits.split(",")) if args.splits else None
    root = generate(args.out, cfg, words, workers=args.workers, splits=splits)
    clips = sum(1 for line in (root / "metadata.csv").read_text().splitlines()[1:] if line)
    print(f"wrote {clips} clips of {len(words)} words to {root} in {time.perf_counter() - start:.0f} s")
    return 0
