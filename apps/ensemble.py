"""``streamlmu ensemble``: one checkpoint whose logits are the mean of several trained models'."""
from __future__ import annotations

import argparse

from streamlmu.audio.bundle import save_ensemble

DESCRIPTION = """Write one checkpoint that runs several trained LMUFormer / Spiking LMUFormer models
side by side on the same input and averages their logits (streamlmu.models.Ensemble). The
members must share labels, feature parameters and latency. listen, kws-eval, evaluate and
StreamingKWS take the result like any checkpoint; the engine runs all members in one step.
Calibrated thresholds are not carried over: calibrate the ensemble with kws-eval --calibrate."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("members", nargs="+", help="checkpoint files or bundled model names (at least 2)")
    parser.add_argument("--out", required=True, help="checkpoint file to write")


def run(args: argparse.Namespace) -> int:
    if len(args.members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members (got {len(args.members)})")
    ensemble = save_ensemble(args.members, args.out)
    parameters = sum(p.numel() for p in ensemble.parameters())
    print(f"wrote an ensemble of {len(args.members)} models ({parameters:,} parameters) to {args.out}")
    return 0
