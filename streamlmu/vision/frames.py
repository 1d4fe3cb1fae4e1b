"""Frame sources: video files, image folders, webcams, and a generated video of moving objects with ground truth.

Every source yields frames as ``(H, W, 3)`` uint8 RGB NumPy arrays (:func:`as_batch` makes the
``(1, 1, 3, H, W)`` tensor a :class:`~streamlmu.vision.detect.Detector` takes), one at a time, so a
stream of any length runs in constant memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def as_batch(frame: np.ndarray) -> torch.Tensor:
    """An ``(H, W, 3)`` uint8 RGB frame as one stream's one-frame chunk ``(1, 1, 3, H, W)``."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (height, width, 3) uint8 RGB (got {frame.shape} {frame.dtype})")
    return torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))[None, None]


def _cv2():
    from streamlmu.vision.yolo import require
    return require("cv2")


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video file (anything OpenCV reads)."""
    cv2 = _cv2()
    if not Path(path).is_file():
        raise FileNotFoundError(f"no video at {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot read {path} as a video")
    yield from _read(capture)


def _read(capture, frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames of an opened OpenCV capture, ``frames`` of them or until it ends; then it is released."""
    cv2 = _cv2()
    try:
        count = 0
        while frames is None or count < frames:
            ok, frame = capture.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def video_rate(path: str | Path, default: float = 25.0) -> float:
    """Frames per second a video file declares (``default`` if none)."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return rate if rate and rate > 0 else default


def folder_frames(folder: str | Path) -> Iterator[np.ndarray]:
    """The images of a folder in name order (grey and RGBA images become RGB)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no image folder at {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for path in files:
        yield np.asarray(Image.open(path).convert("RGB"))


def webcam_frames(index: int = 0, frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames of camera ``index`` (OpenCV), ``frames`` of them or until the camera stops."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(index)
    if not capture.isOpened():
        raise RuntimeError(f"no camera {index} could be opened")
    yield from _read(capture, frames)


@dataclass(frozen=True)
class MovingObjectsConfig:
    """A generated video: ``objects`` objects of the detection set's classes crossing one background."""

    frames: int = 120
    size: int = 320
    objects: int = 8
    speed: tuple[float, float] = (0.5, 3.0)   # pixels per frame
    seed: int = 0


def moving_objects(cfg: MovingObjectsConfig = MovingObjectsConfig()
                   ) -> Iterator[tuple[np.ndarray, list[tuple[int, int, tuple[float, float, float, float]]]]]:
    """Frames of objects moving at constant velocities (bouncing off the edges) over a photograph, each with its
    ground truth ``[(id, class, (x1, y1, x2, y2)), ...]`` (ids from 1; objects fully inside the frame)."""
    from streamlmu.vision import synth
    rng = np.random.default_rng(cfg.seed)
    background = synth.photo_background(rng, synth.background_pool(), cfg.size).convert("RGBA")
    things = []
    for ident in range(1, cfg.objects + 1):
        kind = int(rng.integers(len(synth.CLASSES)))
        sprite = synth._sprite(synth.CLASSES[kind], rng, cfg.size / 320 * 1.2)
        sprite = sprite.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, expand=True)
        w, h = sprite.size
        position = rng.uniform([0, 0], [cfg.size - w, cfg.size - h])
        angle = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(*cfg.speed) * np.array([np.cos(angle), np.sin(angle)])
        things.append([ident, kind, sprite, position, velocity])
    for _ in range(cfg.frames):
        image = background.copy()
        truth = []
        for thing in things:
            ident, kind, sprite, position, velocity = thing
            x, y = (int(round(v)) for v in position)
            image.paste(sprite, (x, y), sprite)
            alpha = np.asarray(sprite.getchannel("A")) > 128
            ys, xs = np.nonzero(alpha)
            truth.append((ident, kind, (float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1),
                                        float(y + ys.max() + 1))))
            position += velocity
            for axis, extent in enumerate(sprite.size):  # bounce off the edges
                if not 0 <= position[axis] <= cfg.size - extent:
                    velocity[axis] = -velocity[axis]
                    position[axis] = np.clip(position[axis], 0, cfg.size - extent)
        yield np.asarray(image.convert("RGB")), truth


def frame_source(spec: str, frames: int | None = None) -> tuple[Iterator[tuple[np.ndarray, object]], float, bool]:
    """Frames of a ``--source``: a video file, an image folder, ``webcam`` (or ``webcam:N``) or ``moving`` (the
    generated video): ``(frame, ground truth or None)`` pairs, frames per second, and whether truth comes."""
    if spec == "moving":
        return moving_objects(MovingObjectsConfig(frames=frames or 120)), 25.0, True
    if spec.startswith("webcam"):
        index = int(spec.partition(":")[2] or 0)
        return ((f, None) for f in webcam_frames(index, frames)), 25.0, False
    path = Path(spec)
    if path.is_dir():
        return ((f, None) for f in folder_frames(path)), 10.0, False
    if path.is_file():
        return ((f, None) for f in video_frames(path)), video_rate(path), False
    raise FileNotFoundError(f"--source {spec}: no such video file or image folder (or use webcam, moving)")
