"""``streamlmu evaluate``: accuracy of a checkpoint, offline and streaming, per class, with a confusion matrix."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamlmu.data.speech_commands import SUBSETS, SpeechCommands
from streamlmu.data.synth import read_metadata
from streamlmu.audio.bundle import load_model
from streamlmu.train.evaluate import MODES, accuracy_by, check_column, class_table, evaluate, plot_confusion

DESCRIPTION = """Evaluate a keyword-spotting checkpoint on a Speech Commands v2 split: accuracy
offline (whole clips) and streaming (audio hop by hop, frames one at a time, causal),
how often the two disagree, a per-class table, and a confusion-matrix PNG. On a synthetic
corpus, --by engine,voice,condition breaks the accuracy down by columns of its metadata.csv."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint (best.pt / last.pt / a bundled model)")
    parser.add_argument("--data", required=True, help="corpus root in the SCv2 layout")
    parser.add_argument("--split", choices=SUBSETS, default="testing", help="which split")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: offline, streaming")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per batch")
    parser.add_argument("--plot", default="confusion.png", help="confusion-matrix PNG (of the last mode; empty for none)")
    parser.add_argument("--by", default="", metavar="COLUMNS",
                        help="comma-separated metadata.csv columns to break the accuracy down by, e.g. "
                             "engine,voice,condition (synthetic corpora; any column: noise, channel, carrier...)")
    parser.add_argument("--json", default=None, help="also write the accuracies and per-class counts here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        raise ValueError(f"--modes takes a comma-separated subset of {MODES} (got {args.modes!r})")
    columns = [c.strip() for c in args.by.split(",") if c.strip()]
    metadata = read_metadata(args.data) if columns else {}
    model = load_model(args.model)
    dataset = SpeechCommands(args.data, args.split, labels=len(model.labels), skip_bad_files=True)
    for column in columns:  # a wrong column fails now, not after the evaluation
        check_column(metadata, column)
    results = {mode: evaluate(model, dataset, mode, args.batch_size, progress=not args.quiet) for mode in modes}
    last = results[modes[-1]]
    print(class_table(last))
    print()
    breakdown = {column: {mode: accuracy_by(r, metadata, column) for mode, r in results.items()}
                 for column in columns}
    for column, by_mode in breakdown.items():
        print(_breakdown_table(column, by_mode))
        print()
    for mode, r in results.items():
        print(f"{mode:>9} accuracy: {r.accuracy:.4f} ({int((r.targets == r.predictions).sum())}/{len(r.targets)})")
    if len(results) == 2:
        differ = int((results["offline"].predictions != results["streaming"].predictions).sum())
        gap = float(abs(results["offline"].logits - results["streaming"].logits).max()) if len(last.targets) else 0.0
        print(f"streaming vs offline: {differ} predictions differ, max logit difference {gap:.2e}")
    if last.skipped:
        print(f"skipped {last.skipped} unreadable files")
    if args.plot:
        plot = plot_confusion(last, args.plot, f"{Path(args.model).name} on {args.split}, {modes[-1]}: "
                                               f"accuracy {last.accuracy:.4f}")
        print(f"confusion matrix: {plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "split": args.split, "clips": len(last.targets), "skipped": last.skipped,
            "accuracy": {m: r.accuracy for m, r in results.items()},
            "confusion": {m: r.confusion().tolist() for m, r in results.items()}, "classes": list(last.classes),
            "by": {column: {mode: {value: {"correct": c, "clips": n, "accuracy": c / n} for value, (c, n) in
                                   groups.items()} for mode, groups in by_mode.items()}
                   for column, by_mode in breakdown.items()}},
            indent=1))
    return 0


def _breakdown_table(column: str, by_mode: dict[str, dict[str, tuple[int, int]]]) -> str:
    """Accuracy per value of ``column``, one column per mode."""
    modes = list(by_mode)
    values = list(next(iter(by_mode.values())))
    width = max(len(column), *(len(v) for v in values))
    lines = [f"{column:<{width}} {'clips':>6} " + " ".join(f"{m:>9}" for m in modes)]
    for value in values:
        clips = by_mode[modes[0]][value][1]
        lines.append(f"{value:<{width}} {clips:>6} " + " ".join(
            f"{by_mode[m][value][0] / by_mode[m][value][1]:>9.4f}" for m in modes))
    return "\n".join(lines)
