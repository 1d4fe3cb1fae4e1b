"""``streamlmu truncation``: accuracy against frames heard, and early decisions, for one or more checkpoints."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamlmu.data.speech_commands import SUBSETS
from streamlmu.audio.bundle import load_model
from streamlmu.train.truncation_report import markdown, measure, plot

DESCRIPTION = """Sequence-truncation benchmark: stream each clip of a split once, frame by frame,
and report the accuracy after every number of frames heard (causal: the answer
at frame t uses frames <= t only), aligned to the word where the corpus knows
its onset, and an early-decision policy whose confidence threshold is chosen on
the calibration split (validation) and reported on the test split: mean frames
used, accuracy, MACs and SynOps saved. Writes truncation.md, truncation.json and
truncation.png to --out, with the LMUFormer paper's points for reference."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="models", action="append", required=True, metavar="CKPT",
                        help="a checkpoint or bundled model name; repeat for several")
    parser.add_argument("--data", required=True, help="corpus root in the SCv2 layout")
    parser.add_argument("--split", choices=SUBSETS, default="testing", help="the split reported on")
    parser.add_argument("--calibration-split", choices=SUBSETS, default="validation",
                        help="the split the early-decision threshold and the fixed prefix are chosen on")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="accuracy the early decision may lose against the full clip (0.01: 1 point)")
    parser.add_argument("--grid", type=int, default=8, help="tabulate every GRID frames (1: every frame)")
    parser.add_argument("--batch-size", type=int, default=64, help="clips streamed together")
    parser.add_argument("--out", default="truncation", help="folder for truncation.md, .json and .png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _display_name(ckpt: str) -> str:
    """A bundled name as given; a file by its stem, or its run folder for best.pt / last.pt."""
    path = Path(ckpt)
    if path.suffix != ".pt":
        return ckpt
    return path.parent.name if path.stem in ("best", "last") and path.parent.name else path.stem


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.tolerance < 1.0:
        raise ValueError(f"--tolerance must be in [0, 1) (got {args.tolerance})")
    reports = []
    for ckpt in args.models:
        model = load_model(ckpt)
        if not args.quiet:
            print(f"{ckpt}: streaming the {args.split} and {args.calibration_split} splits")
        reports.append(measure(_display_name(ckpt), model, args.data, args.split,
                               args.calibration_split, args.tolerance, args.grid, args.batch_size,
                               progress=not args.quiet))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(reports, args.tolerance)
    (out / "truncation.md").write_text(text)
    (out / "truncation.json").write_text(json.dumps({"tolerance": args.tolerance, "data": args.data,
                                                     "models": reports}, indent=1, allow_nan=False))
    image = plot(reports, out / "truncation.png")
    print(text)
    print(f"wrote {out / 'truncation.md'}, {out / 'truncation.json'}, {image}")
    return 0
