"""Boxes and track ids drawn on frames, and the frames written as a video or PNG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from streamlmu.vision.detect import Boxes

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190)]


def draw(frame: np.ndarray, boxes: Boxes, tracks=None, names: dict | None = None) -> np.ndarray:
    """The first frame of stream 0 of ``boxes`` (and ``tracks``) drawn on ``frame`` ``(H, W, 3)`` uint8 RGB."""
    image = Image.fromarray(frame)
    pen = ImageDraw.Draw(image)
    names = names or {}
    for k in range(int(boxes.count[0, 0])):
        cls = int(boxes.classes[0, 0, k])
        box = boxes.boxes[0, 0, k].tolist()
        pen.rectangle(box, outline=_PALETTE[cls % len(_PALETTE)], width=1)
        pen.text((box[0], max(0, box[1] - 10)), f"{names.get(cls, cls)} {float(boxes.scores[0, 0, k]):.2f}",
                 fill=_PALETTE[cls % len(_PALETTE)])
    if tracks is not None:
        for k in range(int(tracks.count[0, 0])):
            ident = int(tracks.ids[0, 0, k])
            x1, y1, x2, y2 = tracks.boxes[0, 0, k].tolist()
            pen.text((x1, y2 + 1), f"#{ident}", fill=_PALETTE[ident % len(_PALETTE)])
    return np.asarray(image)


class FrameWriter:
    """Writes frames to ``folder/annotated.mp4`` (OpenCV) or as ``folder/frame_NNNNN.png``."""

    def __init__(self, folder: str | Path, rate: float, png: bool = False):
        self.folder, self.rate, self.png = Path(folder), rate, png
        self.video = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        if self.png:
            Image.fromarray(frame).save(self.folder / f"frame_{self.count:05d}.png")
        else:
            import cv2
            if self.video is None:
                height, width = frame.shape[:2]
                self.video = cv2.VideoWriter(str(self.folder / "annotated.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                             self.rate, (width, height))
            self.video.write(np.ascontiguousarray(frame[..., ::-1]))
        self.count += 1

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self.video is not None:
            self.video.release()
