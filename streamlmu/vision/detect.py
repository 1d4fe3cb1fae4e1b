"""A YOLOv8 detector as a stream operator: image frames in, padded boxes out.

    Detector(model) : (batch, time, 3, H, W) uint8 RGB or float in [0, 1] -> Boxes (batch, time, K, ...)

Each frame is scaled so its longer side is ``imgsz`` (kept as it is if None), padded to a multiple of
the model's stride with grey, run through the model and non-maximum suppression (ultralytics), and its
boxes are mapped back to the frame's pixels. A detector looks at each frame alone; its state only counts
the frames each stream has shown (``(B,)`` int64). A :class:`streamlmu.vision.track.Tracker` after it
links boxes across frames. Models come from
:func:`load_detector` (a ``.pt`` saved whole by ultralytics or by :mod:`streamlmu.vision.compress`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.stream import IMAGES, Frame, StreamModule, register_state
from streamlmu.vision.yolo import ultralytics

PAD_VALUE = 114 / 255  # ultralytics' letterbox grey


@register_state
class Boxes(NamedTuple):
    """Detections per frame, padded to ``K``: ``boxes (B, n, K, 4)`` float32 x1 y1 x2 y2 in the frame's pixels,
    ``scores (B, n, K)`` float32, ``classes (B, n, K)`` int64 (-1 in padding), ``count (B, n)`` int64."""

    boxes: Tensor
    scores: Tensor
    classes: Tensor
    count: Tensor


def empty_boxes(batch: int, frames: int, k: int) -> Boxes:
    return Boxes(torch.zeros(batch, frames, k, 4), torch.zeros(batch, frames, k),
                 torch.full((batch, frames, k), -1, dtype=torch.int64), torch.zeros(batch, frames, dtype=torch.int64))


def load_detector(path: str | Path) -> nn.Module:
    """A detection model saved whole (by ultralytics or streamlmu), float32, eval mode, on the CPU."""
    ultralytics()
    from ultralytics.nn.tasks import load_checkpoint
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no detector weights at {path} (expected a .pt saved by ultralytics or "
                                f"streamlmu detect-compress)")
    try:
        model, _ = load_checkpoint(str(path))
    except Exception as err:  # truncated, or not a checkpoint at all
        raise ValueError(f"{path} is not a detector checkpoint saved by ultralytics or streamlmu ({err})") from err
    return model.float().cpu().eval()


def save_detector(model: nn.Module, path: str | Path, **info) -> Path:
    """Save a detection model whole, in float32, in the checkpoint layout ultralytics reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = getattr(model, "args", None)
    torch.save({"model": model.float().cpu(), "ema": None, "train_args": dict(args) if isinstance(args, dict) else {},
                "streamlmu": info}, path)
    return path


class Detector(StreamModule):
    """Boxes of the objects in each frame: ``(B, T, 3, H, W)`` -> :class:`Boxes` ``(B, T, max_det, ...)``.

    Args:
        model: a detection model or the path of one (see :func:`load_detector`).
        conf: the least score a box is kept with; iou: NMS overlap at which the weaker box goes.
        max_det: boxes kept per frame (the padding ``K``).
        imgsz: the longer side frames are scaled to (None: as they come; both sides are padded to the stride).
    """

    input_frame = IMAGES
    output_frame = Frame((None, 4), ("detections", "xyxy"), "float", "frames")

    def __init__(self, model: nn.Module | str | Path, conf: float = 0.25, iou: float = 0.7, max_det: int = 100,
                 imgsz: int | None = 320):
        super().__init__()
        if not (0.0 <= conf <= 1.0 and 0.0 <= iou <= 1.0) or max_det < 1:
            raise ValueError(f"conf and iou must be in [0, 1] and max_det >= 1 (got {conf}, {iou}, {max_det})")
        self.model = load_detector(model) if isinstance(model, (str, Path)) else model.float().eval()
        self.names = dict(getattr(self.model, "names", {}) or {})
        self.stride = int(max(getattr(self.model, "stride", torch.tensor([32.0])).max().item(), 32))
        self.conf, self.iou, self.max_det, self.imgsz = conf, iou, max_det, imgsz

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
        return torch.zeros(batch_size, dtype=torch.int64, device=device)

    def _prepare(self, frames: Tensor) -> tuple[Tensor, float]:
        """``(N, 3, H, W)`` frames as the model's float input, and the scale applied to them."""
        x = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        height, width = x.shape[-2:]
        scale = 1.0 if self.imgsz is None else self.imgsz / max(height, width)
        if scale != 1.0:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        pad_h = math.ceil(x.shape[-2] / self.stride) * self.stride - x.shape[-2]
        pad_w = math.ceil(x.shape[-1] / self.stride) * self.stride - x.shape[-1]
        return F.pad(x, (0, pad_w, 0, pad_h), value=PAD_VALUE), scale

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Boxes, Tensor]:
        self.input_frame.check(x)
        batch, time, _, height, width = x.shape
        if not height or not width:
            raise ValueError(f"frames must have at least one pixel (got shape {tuple(x.shape)})")
        state = self.init_state(batch) if state is None else state
        if not isinstance(state, Tensor) or state.shape != (batch,):
            raise ValueError(f"state must be the frame counts ({batch},) from Detector.init_state")
        out = empty_boxes(batch, time, self.max_det)
        if not batch * time:
            return out, state
        from ultralytics.utils.nms import non_max_suppression
        inputs, scale = self._prepare(x.reshape(batch * time, *x.shape[2:]))
        with torch.no_grad():
            predictions = self.model(inputs)
        kept = non_max_suppression(predictions, self.conf, self.iou, max_det=self.max_det, max_time_img=1e3)
        for index, found in enumerate(kept):
            b, t, n = index // time, index % time, len(found)
            boxes = found[:, :4] / scale
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            out.boxes[b, t, :n], out.scores[b, t, :n] = boxes, found[:, 4]
            out.classes[b, t, :n], out.count[b, t] = found[:, 5].long(), n
        return out, state + time
