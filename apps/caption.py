"""Caption a video, an image folder, a webcam or a generated scene video, frame by frame.

The captioner re-captions when the scene changes (an image-embedding distance trigger with hysteresis) and
keeps the caption otherwise. Prints one JSON line per new caption ({"t", "frame", "caption"}) and a summary:
frames, decoder runs, frames per second. --source scenes is a generated video whose scene changes every
--scene-seconds (its lines also say which scene it is). See streamlmu.vision.caption.captioner.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="a video file, an image folder, 'webcam' (or 'webcam:N'), "
                        "or 'scenes' (a generated video)")
    parser.add_argument("--model", required=True, help="a captioner of streamlmu caption-train (e.g. RUN/student.pt)")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    parser.add_argument("--high", type=float, default=0.15, help="embedding distance that counts as a change")
    parser.add_argument("--low", type=float, default=0.05, help="distance under which a moving scene has settled")
    parser.add_argument("--patience", type=int, default=2, help="frames in a row beyond --high before re-captioning")
    parser.add_argument("--no-trigger", action="store_true", help="decode every frame")
    parser.add_argument("--scene-seconds", type=float, default=3.0, help="--source scenes: seconds per scene")
    parser.add_argument("--seed", type=int, default=0, help="--source scenes: which scenes")


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import torch

    from streamlmu.vision.caption.captioner import Captioner
    from streamlmu.vision.caption.model import load_captioner
    from streamlmu.vision.frames import as_batch, frame_source
    model = load_captioner(args.model)
    captioner = Captioner(model, args.high, args.low, args.patience, args.beam, trigger=not args.no_trigger)
    if args.source == "scenes":
        from streamlmu.vision.caption.scenes import scene_video
        count = 10 if args.frames is None else -(-args.frames // round(args.scene_seconds * 25))
        frames, rate = scene_video(count, args.scene_seconds, 25.0, model.towers.image_size[0], seed=args.seed), 25.0
    else:
        frames, rate, _ = frame_source(args.source, args.frames)
    state, decoded, count, start = captioner.init_state(1), 0, 0, time.perf_counter()
    with torch.inference_mode():
        for frame, truth in frames:
            if args.frames is not None and count >= args.frames:
                break
            out, state = captioner(as_batch(frame), state)
            decoded += int(out.decoded[0, 0])
            if out.changed[0, 0]:
                line = {"t": round(count / rate, 3), "frame": count, "caption": model.vocab.decode(out.tokens[0, 0])}
                print(json.dumps(line | ({} if truth is None else {"scene": int(truth)})), flush=True)
            count += 1
    seconds = time.perf_counter() - start
    print(f"{count} frames, {decoded} decoder runs, {count / max(seconds, 1e-9):.1f} frames/s")
    return 0
