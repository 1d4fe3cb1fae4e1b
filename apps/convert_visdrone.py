"""Convert VisDrone-DET annotations into a YOLO dataset (images linked, labels written, data.yaml).

--src is one split folder (images/ and annotations/) or a folder of VisDrone2019-DET-train, -val and
-test-dev folders. See streamlmu.vision.visdrone.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True, help="the VisDrone-DET folder")
    parser.add_argument("--out", required=True, help="folder for the YOLO dataset")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from streamlmu.vision.visdrone import convert_visdrone
    path = convert_visdrone(args.src, args.out, progress=not args.quiet)
    print(f"dataset description: {path}")
    return 0
