"""Leave-one-voice-out: how keyword spotting holds up on a voice it never heard.

For each held-out voice (a ``metadata.csv`` column and value: a Festival voice,
an espeak-ng voice variant or accent) and each front end (``fbank``,
``speech-embedding``), on a diverse synthetic corpus:

1. clips: the 35-word LMUFormer trained on every other voice (:data:`RECIPES`),
   its accuracy on every clip of the held-out voice and on the other voices'
   test split;
2. streams: the 12-label live spotter trained the same way, its thresholds
   calibrated on the other voices' validation streams (at most
   ``--false-alarms`` per hour), then its hits, false alarms per hour and
   real-time factor on streams made of the held-out voice's words;
3. pocketsphinx keyword search (a recogniser trained on real speech) on the
   same streams, its threshold calibrated on the same validation streams.

Results go to ``bench/results/voices.json`` and ``voices.md``; cells already in
the JSON are not run again (``--force`` reruns them), so a long run can be
resumed. Trained models stay in ``--work``.

Usage: ``python bench/voices.py --data DIR [--holdout voice=cmu_us_slt_arctic_hts ...]
[--features fbank,speech-embedding] [--tasks clips,streams,pocketsphinx]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import pocketsphinx_kws
from holdout import holdout_views
from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.kws_eval import calibrate, run_streams, score
from streamlmu.data.speech_commands import SAMPLE_RATE, WORDS_10, SpeechCommands
from streamlmu.data.streams import StreamBuilder, StreamConfig, build_streams
from streamlmu.audio.bundle import load_model, save_thresholds
from streamlmu.train.evaluate import evaluate
from streamlmu.train.trainer import TrainConfig, train

HOLDOUTS = ("voice=cmu_us_slt_arctic_hts", "variant=f4", "voice=en-gb-scotland")
# The recipes of the bundled speech-embedding models (their cards in streamlmu/pretrained/), used for both front ends.
_CLIPS = dict(model="lmuformer", labels=35, epochs=60, lr_schedule="cosine", loss="ce", overrides=dict(dim=96))
_STREAMS = dict(model="lmuformer", labels=12, stream_windows=True, epochs=60, lr_schedule="cosine", mixup_alpha=0.0,
                word_heads=0.3, hard_negatives=("dog", "learn", "nine", "tree", "bed"), overrides=dict(dim=96))
RECIPES: dict[str, dict] = {"clips": _CLIPS, "streams": _STREAMS}


def _trained(data: Path, out: Path, task: str, features: str, args: argparse.Namespace) -> Path:
    """``out/best.pt`` of the task's recipe on ``data`` (trained unless it exists), with the budget of ``args``."""
    recipe = dict(RECIPES[task], feature_variants=args.feature_variants)
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    if args.quick:
        recipe["epochs"] = 2
    metrics = out / "metrics.csv"
    done = len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0
    if done < recipe["epochs"]:  # a run killed part way resumes from its last.pt
        train(TrainConfig(data=str(data), out=str(out), features=features, tensorboard=False, **recipe),
              resume=(out / "last.pt").is_file(), progress=False)
    return out / "best.pt"


def _record(out: Path, holdout: str, name: str, task: str, cell: dict) -> None:
    """Add one cell to the results file (re-read first: other runs may share the file)."""
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.setdefault(holdout, {}).setdefault(name, {})[task] = cell
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


def _streams(data: Path, split: str, minutes: float, seed: int, count: int = 8):
    builder = StreamBuilder(SpeechCommands(data, split, 35), WORDS_10, StreamConfig(seconds=minutes * 60 / count))
    return build_streams(builder, count, seed)


def clip_cell(rest: Path, voice: Path, work: Path, features: str, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    model = load_model(_trained(rest, work / f"clips-{features}", "clips", features, args))
    held = evaluate(model, SpeechCommands(voice, "testing"), progress=False)
    seen = evaluate(model, SpeechCommands(rest, "testing"), progress=False)
    return {"heldout_accuracy": held.accuracy, "heldout_clips": len(held.targets),
            "other_voices_accuracy": seen.accuracy, "other_voices_clips": len(seen.targets),
            "minutes": (time.perf_counter() - start) / 60}


def stream_cell(rest: Path, voice: Path, work: Path, features: str, args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    path = _trained(rest, work / f"streams-{features}", "streams", features, args)
    kws = StreamingKWS.from_pretrained(path, streams=8, keywords=WORDS_10)
    audio, truths = _streams(rest, "validation", args.calibrate_minutes, 10_000)
    _, posteriors, energy = run_streams(kws, audio)
    grid = tuple(t for t in (0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999))
    thresholds, validation, _ = calibrate(kws, posteriors, energy, truths, audio.size / SAMPLE_RATE,
                                          args.false_alarms, grid=grid)
    save_thresholds(path, work / f"streams-{features}" / "calibrated.pt", thresholds)
    kws = StreamingKWS.from_pretrained(work / f"streams-{features}" / "calibrated.pt", streams=8)
    audio, truths = _streams(voice, "testing", args.minutes, 0)
    clock = time.perf_counter()
    events, _, _ = run_streams(kws, audio)
    rtf = (time.perf_counter() - clock) / (audio.size / SAMPLE_RATE)
    report = score(events, truths, WORDS_10, audio.size / SAMPLE_RATE)
    return {**report.summary(), "real_time_factor": rtf, "validation": validation, "thresholds": thresholds,
            "minutes": (time.perf_counter() - start) / 60}


def pocketsphinx_cell(rest: Path, voice: Path, args: argparse.Namespace) -> dict:
    audio, truths = _streams(rest, "validation", args.calibrate_minutes, 10_000)
    thresholds, validation = pocketsphinx_kws.calibrate(audio, truths, WORDS_10, args.false_alarms)
    audio, truths = _streams(voice, "testing", args.minutes, 0)
    report, rtf = pocketsphinx_kws.evaluate(audio, truths, WORDS_10, thresholds)
    return {**report.summary(), "real_time_factor": rtf, "thresholds": thresholds, "validation": validation}


def markdown(results: dict, args: argparse.Namespace) -> str:
    lines = ["# Leave-one-voice-out", "",
             f"Corpus `{Path(args.data).name}`; each voice held out of training, validation and calibration. Clips: "
             "35-word accuracy on every clip of the held-out voice (and on the other voices' test split). Streams: "
             f"the 12-label spotter on {args.minutes:g} min of streams of the held-out voice's words, thresholds "
             f"calibrated on {args.calibrate_minutes:g} min of the other voices' validation streams at "
             f"<= {args.false_alarms:g} false alarms per hour; pocketsphinx keyword search calibrated the same way. "
             f"Training budget: {args.epochs or _CLIPS['epochs']} epochs, {args.feature_variants} renderings of the "
             "training data.",
             "", "| held-out voice | front end | clips (held-out) | clips (other voices) | stream hits | "
                 "false alarms / h | real-time factor |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for holdout, cells in results.items():
        for name, cell in cells.items():
            clips, streams = cell.get("clips", {}), cell.get("streams", {})
            pct = (lambda v: f"{100 * v:.1f} %" if v is not None else "-")
            lines.append(f"| {holdout} | {name} | {pct(clips.get('heldout_accuracy'))} | "
                         f"{pct(clips.get('other_voices_accuracy'))} | {pct(streams.get('hit_rate'))} | "
                         f"{streams.get('false_alarms_per_hour', '-')} | "
                         f"{streams['real_time_factor']:.4f} |" if streams else
                         f"| {holdout} | {name} | {pct(clips.get('heldout_accuracy'))} | "
                         f"{pct(clips.get('other_voices_accuracy'))} | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a diverse synthetic corpus (streamlmu synth-speech-commands)")
    parser.add_argument("--holdout", action="append", default=None, metavar="COLUMN=VALUE",
                        help=f"a voice to hold out, by metadata column (default: {', '.join(HOLDOUTS)})")
    parser.add_argument("--features", default="fbank,speech-embedding", help="front ends to compare")
    parser.add_argument("--tasks", default="clips,streams,pocketsphinx", help="what to measure")
    parser.add_argument("--minutes", type=float, default=20.0, help="held-out stream audio per voice")
    parser.add_argument("--calibrate-minutes", type=float, default=60.0, help="validation stream audio")
    parser.add_argument("--false-alarms", type=float, default=2.0, help="calibration budget per hour")
    parser.add_argument("--work", default="runs/voices", help="folder for the views and trained models")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "voices.json"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs per model (default: the recipe's {_CLIPS['epochs']})")
    parser.add_argument("--feature-variants", type=int, default=4,
                        help="renderings of the training data (speech-embedding; the bundled recipe's 4)")
    parser.add_argument("--quick", action="store_true", help="two epochs per model (a smoke test)")
    parser.add_argument("--force", action="store_true", help="rerun cells already in the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() and not args.force else {}
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for holdout in args.holdout or HOLDOUTS:
        column, value = holdout.split("=", 1)
        work = Path(args.work) / f"{column}-{value}"
        rest, voice = holdout_views(args.data, column, value, work)
        cells = results.setdefault(holdout, {})
        for features in [f.strip() for f in args.features.split(",") if f.strip()]:
            cell = cells.setdefault(features, {})
            for task in ("clips", "streams"):
                if task in tasks and task not in cell:
                    cell[task] = clip_cell(rest, voice, work, features, args) if task == "clips" else \
                        stream_cell(rest, voice, work, features, args)
                    _record(out, holdout, features, task, cell[task])
                    print(holdout, features, task, json.dumps(cell[task])[:300], flush=True)
        if "pocketsphinx" in tasks and "streams" not in cells.get("pocketsphinx", {}):
            cells.setdefault("pocketsphinx", {})["streams"] = pocketsphinx_cell(rest, voice, args)
            _record(out, holdout, "pocketsphinx", "streams", cells["pocketsphinx"]["streams"])
            print(holdout, "pocketsphinx", json.dumps(cells["pocketsphinx"]["streams"])[:300], flush=True)
    results = json.loads(out.read_text()) if out.is_file() else results
    out.with_suffix(".md").write_text(markdown(results, args))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
