"""``streamlmu kws-eval``: hit rate, false alarms per hour and latency of live keyword spotting on long streams."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from streamlmu.apps.listen import add_verifier_arguments, verifier_options
from streamlmu.audio.kws import StreamingKWS
from streamlmu.pretrained import DEFAULT_KWS_MODEL
from streamlmu.audio.kws_eval import THRESHOLD_GRID, calibrate, plot_stream, run_streams, score
from streamlmu.audio.verify import RecordedVerifier
from streamlmu.data.speech_commands import SAMPLE_RATE, WORDS_10, SpeechCommands
from streamlmu.data.phrases import PhraseConfig, PhraseStreamBuilder
from streamlmu.data.streams import StreamBuilder, StreamConfig, build_streams
from streamlmu.audio.bundle import save_thresholds

DESCRIPTION = """Evaluate live keyword spotting: builds long streams from a Speech Commands split
(keyword and other words over background noise, with known word times), runs StreamingKWS over
them, and reports hits, false alarms per hour and detection latency (event time minus word end)
per keyword. --calibrate first picks the threshold on validation streams, never on the test ones.
--phrases builds the streams from whole sentences with the keywords inside them instead."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_KWS_MODEL, help="checkpoint file or bundled model name")
    parser.add_argument("--data", required=True, help="corpus root in the SCv2 layout")
    parser.add_argument("--split", default="testing", choices=("validation", "testing"), help="split to evaluate")
    parser.add_argument("--keywords", default=",".join(WORDS_10), help="comma-separated keywords")
    parser.add_argument("--minutes", type=float, default=40.0, help="audio to evaluate, over all streams")
    parser.add_argument("--streams", type=int, default=8, help="streams run side by side")
    parser.add_argument("--threshold", type=float, default=None, help="detection threshold (default: StreamingKWS's)")
    parser.add_argument("--calibrate", type=float, default=None, metavar="FA_PER_HOUR",
                        help="choose per-keyword thresholds that hit the most keywords of validation streams with "
                             "at most this many false alarms per hour")
    parser.add_argument("--calibrate-minutes", type=float, default=None, metavar="MINUTES",
                        help="with --calibrate: validation audio to calibrate on, over all streams (default: "
                             "--minutes; more audio holds more false alarms and so a steadier rate)")
    parser.add_argument("--min-threshold", type=float, default=0.0, metavar="P",
                        help="with --calibrate: no keyword's threshold goes below this (e.g. 0.95); a floor keeps "
                             "calibration from lowering a threshold that merely saw no false alarm on its streams")
    parser.add_argument("--save-thresholds", metavar="CKPT", default=None,
                        help="with --calibrate: write a copy of the model with the calibrated thresholds (listen and "
                             "StreamingKWS then use them by default)")
    parser.add_argument("--phrases", action="store_true",
                        help="streams of ordinary sentences said by the split's speakers, with the keywords inside "
                             "them, instead of words one after another (needs a synthetic corpus's metadata.csv)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the streams")
    parser.add_argument("--int8", action="store_true", help="run the model's dense layers as int8 products")
    add_verifier_arguments(parser)
    parser.add_argument("--plot", default="kws_stream.png", help="PNG of the first stream's first 30 s")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (one suits the small per-hop work of streaming)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _streams(args, split: str, keywords: tuple[str, ...], seed: int, minutes: float):
    seconds = minutes * 60 / args.streams
    dataset = SpeechCommands(args.data, split, 35)
    builder = PhraseStreamBuilder(dataset, keywords, PhraseConfig(seconds=seconds), seed) if args.phrases \
        else StreamBuilder(dataset, keywords, StreamConfig(seconds=seconds))
    return build_streams(builder, args.streams, seed)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    keywords = tuple(k.strip() for k in args.keywords.split(",") if k.strip())
    if (args.save_thresholds or args.calibrate_minutes is not None or args.min_threshold) and args.calibrate is None:
        raise ValueError("--save-thresholds, --calibrate-minutes and --min-threshold need --calibrate")
    grid = tuple(t for t in THRESHOLD_GRID if t >= args.min_threshold)
    if not grid:
        raise ValueError(f"--min-threshold must be at most {THRESHOLD_GRID[-1]}, the grid's top "
                         f"(got {args.min_threshold})")
    calibrate_minutes = args.minutes if args.calibrate_minutes is None else args.calibrate_minutes
    if calibrate_minutes <= 0:
        raise ValueError(f"--calibrate-minutes must be > 0 (got {calibrate_minutes})")
    if args.streams < 1 or args.minutes <= 0:
        raise ValueError(f"--streams must be >= 1 and --minutes > 0 (got {args.streams}, {args.minutes})")
    options = dict(streams=args.streams, keywords=keywords, int8_min_batch=1 if args.int8 else None,
                   **verifier_options(args))
    result: dict = {"model": str(args.model), "split": args.split, "keywords": list(keywords),
                    "streams": "phrases" if args.phrases else "words"}
    threshold = args.threshold
    if args.calibrate is not None:
        kws = StreamingKWS.from_pretrained(args.model, **options)
        audio, truths = _streams(args, "validation", keywords, args.seed + 10_000, calibrate_minutes)
        _, posteriors, energy = run_streams(kws, audio, progress=not args.quiet)
        verify = None if kws.verifier is None else RecordedVerifier(kws.verifier.model, audio, args.verify_delay,
                                                                     args.verify_threshold)
        threshold, reached, rows = calibrate(kws, posteriors, energy, truths, audio.size / SAMPLE_RATE,
                                             args.calibrate, grid=grid, verify=verify)
        result["calibration"] = rows  # with the verifier, if there is one: the budget holds for the events it keeps
        result["validation"] = reached
        print(f"calibrated on {audio.size / SAMPLE_RATE / 3600:.2f} h of validation streams (at most "
              f"{args.calibrate} false alarms per hour): " + ", ".join(f"{k} {t}" for k, t in threshold.items())
              + f"; there {reached['hit_rate']:.1%} hits at {reached['false_alarms_per_hour']:.2f} per hour")
        if args.save_thresholds:
            save_thresholds(args.model, args.save_thresholds, threshold)
            print(f"wrote {args.save_thresholds} with these thresholds")
    if threshold is not None:
        options["threshold"] = threshold
    kws = StreamingKWS.from_pretrained(args.model, **options)
    audio, truths = _streams(args, args.split, keywords, args.seed, args.minutes)
    events, posteriors, _ = run_streams(kws, audio, progress=not args.quiet)
    report = score(events, truths, keywords, audio.size / SAMPLE_RATE)
    print(report.table())
    if kws.verifier is not None:
        print(f"the verifier rejected {kws.stats.rejected_events} detection(s)")
        result["verifier"] = {"model": str(args.verifier), "delay_s": args.verify_delay,
                              "threshold": args.verify_threshold, "rejected": kws.stats.rejected_events}
    result.update(thresholds={k: kws.detector.thresholds[kws.labels.index(k)] for k in keywords}, **report.summary(),
                  per_keyword={k: {"occurrences": s.occurrences, "hits": s.hits, "false_alarms": s.false_alarms,
                                   "median_latency_s": float(np.median(s.latencies)) if s.latencies else None}
                               for k, s in report.keywords.items()},
                  compute_per_hop_ms={"mean": kws.hop_seconds.mean * 1e3,
                                      "p99": kws.hop_seconds.quantile(0.99) * 1e3, "streams": args.streams})
    if args.plot:
        plot_stream(args.plot, audio[0], posteriors[0], kws.labels, keywords, truths[0], events[0],
                    kws.features.hop / kws.features.sample_rate,
                    title=f"{Path(str(args.model)).stem}: {args.split} stream 0")
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0
