"""Write the generated aerial-style detection set (YOLO format) into a folder.

Objects of five classes (car, truck, bus, pedestrian, bicycle), seen from above, on crops of real photographs
that ship with scikit-image; deterministic for a seed. See streamlmu.vision.synth.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write images/, labels/ and data.yaml into")
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--imgsz", type=int, default=320, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from streamlmu.vision.synth import DetectionSetConfig, write_detection_set
    if args.train < 1 or args.val < 1 or args.imgsz < 32:
        raise ValueError(f"--train and --val must be >= 1 and --imgsz >= 32 (got {args.train}, {args.val}, {args.imgsz})")
    path = write_detection_set(args.out, DetectionSetConfig(args.train, args.val, args.imgsz, seed=args.seed),
                               progress=not args.quiet)
    print(f"wrote {args.train} + {args.val} images; dataset description: {path}")
    return 0
