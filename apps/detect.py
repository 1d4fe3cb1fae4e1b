"""Detect (and track) objects frame by frame in a video, an image folder, a webcam or a generated video.

Writes an annotated video (OUT/annotated.mp4; PNG frames with --png) and one JSON line per frame
(OUT/detections.jsonl) and shows progress and frames per second. --source moving generates a video of
moving objects with ground truth and reports MOTA and ID switches of the tracks.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="a video file, an image folder, 'webcam' (or "
                        "'webcam:N'), or 'moving' (a generated video with ground truth)")
    parser.add_argument("--weights", required=True, help="detector .pt (streamlmu detect-compress or ultralytics)")
    parser.add_argument("--out", default="runs/detect", help="folder for the annotated frames and detections.jsonl")
    parser.add_argument("--imgsz", type=int, default=320, help="longer side frames are scaled to")
    parser.add_argument("--conf", type=float, default=0.25, help="least score of a box")
    parser.add_argument("--track", action="store_true", help="link boxes across frames (Tracker)")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--png", action="store_true", help="write PNG frames instead of a video")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streamlmu.vision.annotate import FrameWriter, draw
    from streamlmu.vision.detect import Detector
    from streamlmu.vision.frames import as_batch, frame_source
    from streamlmu.vision.track import Tracker, clear_mot
    detector = Detector(args.weights, conf=args.conf, imgsz=args.imgsz)
    tracker = Tracker() if args.track else None
    frames, rate, has_truth = frame_source(args.source, args.frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state, track_state = detector.init_state(1), None if tracker is None else tracker.init_state(1)
    truths, tracked, seconds, count = [], [], 0.0, 0
    with open(out / "detections.jsonl", "w") as log, FrameWriter(out, rate, png=args.png) as writer:
        bar = tqdm(frames, unit="frame", disable=args.quiet, total=args.frames)
        for index, (frame, truth) in enumerate(bar):
            if args.frames is not None and index >= args.frames:
                break
            start = time.perf_counter()
            boxes, state = detector(as_batch(frame), state)
            tracks = None
            if tracker is not None:
                tracks, track_state = tracker(boxes, track_state)
            seconds += time.perf_counter() - start
            count += 1
            record = {"frame": index, "boxes": [
                {"box": [round(v, 1) for v in boxes.boxes[0, 0, k].tolist()], "score": round(float(boxes.scores[0, 0, k]), 3),
                 "class": detector.names.get(int(boxes.classes[0, 0, k]), int(boxes.classes[0, 0, k]))}
                for k in range(int(boxes.count[0, 0]))]}
            if tracks is not None:
                shown = [(int(tracks.ids[0, 0, k]), tuple(tracks.boxes[0, 0, k].tolist())) for k in range(int(tracks.count[0, 0]))]
                record["tracks"] = [{"id": i, "box": [round(v, 1) for v in b]} for i, b in shown]
                tracked.append(shown)
                truths.append([(i, b) for i, _, b in truth or []])
            log.write(json.dumps(record) + "\n")
            writer.write(draw(frame, boxes, tracks, detector.names))
            bar.set_postfix(fps=f"{count / max(seconds, 1e-9):.1f}")
    print(f"{count} frames, {count / max(seconds, 1e-9):.1f} frames/s (detector{' + tracker' if tracker else ''}); "
          f"wrote {out}")
    if has_truth and tracker is not None:
        scores = clear_mot(truths, tracked)
        print(f"tracks against the ground truth: MOTA {scores['mota']:.3f}, {scores['id_switches']} ID switches, "
              f"{scores['misses']} misses, {scores['false_positives']} false positives")
        (out / "tracking.json").write_text(json.dumps(scores, indent=1))
    return 0
