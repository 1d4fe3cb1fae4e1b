"""Write the generated captioning set (scenes of shapes, five captions each) into a folder.

Shapes of named colours, sizes and textures, alone or in pairs with a spatial relation, on grass, gravel,
bricks or plain backgrounds; captions from a grammar with paraphrases; train/val/test splits and a concept
vocabulary, in COCO's Karpathy split format; deterministic for a seed. See streamlmu.vision.caption.scenes.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write captions.json and images/ into")
    parser.add_argument("--train", type=int, default=8000, help="training images")
    parser.add_argument("--val", type=int, default=500, help="validation images")
    parser.add_argument("--test", type=int, default=500, help="test images")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from streamlmu.vision.caption.scenes import SceneSetConfig, write_scene_set
    if min(args.train, args.val, args.test) < 1 or args.size < 32:
        raise ValueError(f"--train, --val and --test must be >= 1 and --size >= 32 "
                         f"(got {args.train}, {args.val}, {args.test}, {args.size})")
    path = write_scene_set(args.out, SceneSetConfig(args.train, args.val, args.test, args.size, seed=args.seed),
                           progress=not args.quiet)
    print(f"wrote {args.train} + {args.val} + {args.test} images with 5 captions each: {path}")
    return 0
