"""``streamlmu synth-speech-commands``: write a synthetic Speech Commands v2 corpus."""
from __future__ import annotations

import argparse
import os
import time

from streamlmu.data.speech_commands import WORDS_35
from streamlmu.data.synth import SynthConfig, generate

DESCRIPTION = """Write a synthetic Speech Commands v2 corpus spoken by espeak-ng: the 35 words over
many voices and variants, speeds, pitches and levels, at random onsets inside 1 s,
with generated background noise (white, pink, brown, hum, babble) at random SNR.
Same folder layout, split lists and file naming as the real corpus (splits by speaker),
plus metadata.csv with each word's onset and end. Deterministic for a seed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SynthConfig()
    parser.add_argument("--out", required=True, help="corpus folder to write")
    parser.add_argument("--clips-per-word", type=int, default=defaults.clips_per_word, help="clips of each word")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random choice")
    parser.add_argument("--words", default=",".join(WORDS_35), help="comma-separated subset of the 35 words")
    parser.add_argument("--background-seconds", type=float, default=defaults.background_seconds,
                        help="length of each generated background-noise recording")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel synthesis processes")


def run(args: argparse.Namespace) -> int:
    if args.clips_per_word < 1:
        raise ValueError(f"--clips-per-word must be >= 1 (got {args.clips_per_word})")
    words = tuple(w.strip() for w in args.words.split(",") if w.strip())
    cfg = SynthConfig(clips_per_word=args.clips_per_word, seed=args.seed, background_seconds=args.background_seconds)
    start = time.perf_counter()
    root = generate(args.out, cfg, words, workers=args.workers)
    print(f"wrote {len(words) * cfg.clips_per_word} clips of {len(words)} words to {root} "
          f"in {time.perf_counter() - start:.0f} s")
    return 0
