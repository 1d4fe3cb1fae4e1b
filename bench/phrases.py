"""Keywords said inside sentences: live spotters and pocketsphinx on phrase streams.

Phrase streams (:mod:`streamlmu.data.phrases`) hold whole sentences said by the
speakers of a split of a synthetic corpus, the keywords inside them, as people
say them to a microphone. For each spotter (a bundled name or a checkpoint):

1. as bundled: the thresholds it carries, on the test split's phrase streams;
2. calibrated: per-keyword thresholds chosen on the validation split's phrase
   streams (at most ``--false-alarms`` per hour; other speakers, other
   sentences), then the same test streams.

pocketsphinx keyword search (a recogniser trained on real speech) is calibrated
and tested the same way. Results go to ``bench/results/phrases.json`` and
``phrases.md``; rows already in the JSON are not run again (``--force`` reruns).

Usage: ``python bench/phrases.py --data DIR [--spotter NAME_OR_CKPT ...] [--no-pocketsphinx]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import pocketsphinx_kws
from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.kws_eval import calibrate, run_streams, score
from streamlmu.data.phrases import PhraseConfig, PhraseStreamBuilder
from streamlmu.data.speech_commands import SAMPLE_RATE, WORDS_10, SpeechCommands
from streamlmu.data.streams import build_streams

SPOTTERS = ("lmuformer-tiny-phrases12-kws", "lmuformer-tiny-voices12-kws", "lmuformer-tiny-synth12-kws")


def phrase_streams(data: str, split: str, minutes: float, seed: int,
                   count: int = 8) -> tuple[np.ndarray, list]:
    """``count`` phrase streams of ``minutes`` in all, ``(count, samples)``, and their words."""
    builder = PhraseStreamBuilder(SpeechCommands(data, split, 35), WORDS_10,
                                  PhraseConfig(seconds=minutes * 60 / count), seed)
    return build_streams(builder, count, seed)


def _run(model: str, audio: np.ndarray, truths: list, thresholds: dict | None = None) -> tuple[dict, float]:
    options = {} if thresholds is None else {"threshold": thresholds}
    kws = StreamingKWS.from_pretrained(model, streams=audio.shape[0], keywords=WORDS_10, **options)
    clock = time.perf_counter()
    events, _, _ = run_streams(kws, audio)
    rtf = (time.perf_counter() - clock) / (audio.size / SAMPLE_RATE)
    return score(events, truths, WORDS_10, audio.size / SAMPLE_RATE).summary(), rtf


def spotter_row(model: str, validation: tuple, test: tuple, args: argparse.Namespace) -> dict:
    bundled, rtf = _run(model, *test)
    kws = StreamingKWS.from_pretrained(model, streams=validation[0].shape[0], keywords=WORDS_10)
    _, posteriors, energy = run_streams(kws, validation[0])
    thresholds, reached, _ = calibrate(kws, posteriors, energy, validation[1], validation[0].size / SAMPLE_RATE,
                                       args.false_alarms)
    calibrated, _ = _run(model, *test, thresholds)
    return {"bundled": bundled, "calibrated": calibrated, "validation": reached, "thresholds": thresholds,
            "real_time_factor": rtf}


def pocketsphinx_row(validation: tuple, test: tuple, args: argparse.Namespace) -> dict:
    thresholds, reached = pocketsphinx_kws.calibrate(*validation, WORDS_10, args.false_alarms)
    report, rtf = pocketsphinx_kws.evaluate(*test, WORDS_10, thresholds)
    return {"calibrated": report.summary(), "validation": reached, "thresholds": thresholds,
            "real_time_factor": rtf}


def markdown(results: dict, args: argparse.Namespace) -> str:
    def cell(summary: dict | None) -> str:
        if not summary:
            return "-"
        return (f"{summary['hit_rate']:.1%} ({summary['hits']} / {summary['occurrences']}) at "
                f"{summary['false_alarms_per_hour']:g} FA/h")

    lines = ["# Keywords inside sentences", "",
             f"Corpus `{args.data}`; phrase streams of whole sentences said by the test split's speakers "
             f"({args.minutes:g} min), thresholds calibrated on {args.calibrate_minutes:g} min of the validation "
             f"split's phrase streams (other speakers, other sentences) at <= {args.false_alarms:g} false alarms "
             f"per hour. As bundled: the thresholds the spotter carries.", "",
             "| detector | as bundled | calibrated on phrase streams | validation | real-time factor |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in results.items():
        lines.append(f"| {name} | {cell(row.get('bundled'))} | {cell(row['calibrated'])} | "
                     f"{cell(row['validation'])} | {row['real_time_factor']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a diverse synthetic corpus (streamlmu synth-speech-commands)")
    parser.add_argument("--spotter", action="append", default=None, metavar="NAME_OR_CKPT",
                        help=f"a spotter to measure (default: {', '.join(SPOTTERS)})")
    parser.add_argument("--no-pocketsphinx", action="store_true", help="leave pocketsphinx out")
    parser.add_argument("--minutes", type=float, default=40.0, help="test phrase-stream audio")
    parser.add_argument("--calibrate-minutes", type=float, default=30.0, help="validation phrase-stream audio")
    parser.add_argument("--false-alarms", type=float, default=2.0, help="calibration budget per hour")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "phrases.json"))
    parser.add_argument("--force", action="store_true", help="rerun rows already in the results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() and not args.force else {}
    todo = [m for m in args.spotter or SPOTTERS if m not in results]
    if not args.no_pocketsphinx and "pocketsphinx" not in results:
        todo.append("pocketsphinx")
    if todo:
        validation = phrase_streams(args.data, "validation", args.calibrate_minutes, 10_000)
        test = phrase_streams(args.data, "testing", args.minutes, 0)
    for model in todo:
        if model != "pocketsphinx":
            results[model] = spotter_row(model, validation, test, args)
            print(model, json.dumps(results[model])[:300], flush=True)
        else:
            results["pocketsphinx"] = pocketsphinx_row(validation, test, args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results, args))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
