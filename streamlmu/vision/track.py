"""Multi-object tracking after a detector: IoU matching and a constant-velocity Kalman filter per track.

    detector | Tracker() : Boxes (batch, time, K, ...) -> Tracks (batch, time, max_tracks, ...)

Each stream keeps at most ``max_tracks`` tracks, each a Kalman filter over ``(cx, cy, w, h)`` and their
velocities (SORT, Bewley et al. 2016). Per frame every track is predicted one frame ahead, detections
are matched to predictions by IoU (Hungarian assignment, at least ``min_iou``), matched tracks are
corrected, unmatched detections start tracks in free slots, and a track unmatched for more than
``max_age`` frames ends. Ids count from 1 per stream and are never reused. The state is tensors only,
so it saves, resumes and resets per stream like any other.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from streamlmu.stream import Frame, StreamModule, register_state
from streamlmu.vision.detect import Boxes


@register_state
class TrackState(NamedTuple):
    """Per stream and slot: ``mean (B, M, 8)`` float64 (cx, cy, w, h and their velocities per frame),
    ``cov (B, M, 8, 8)`` float64, ``ident (B, M)`` int64 (0: a free slot), ``classes (B, M)`` int64,
    ``hits (B, M)`` and ``misses (B, M)`` int64 (matched frames, frames since the last match); ``issued (B,)``
    int64 the ids given so far."""

    mean: Tensor
    cov: Tensor
    ident: Tensor
    classes: Tensor
    hits: Tensor
    misses: Tensor
    issued: Tensor


@register_state
class Tracks(NamedTuple):
    """Tracks seen in each frame, padded to ``M``: ``boxes (B, n, M, 4)`` float32 x1 y1 x2 y2, ``ids (B, n, M)``
    int64 (0 in padding), ``classes (B, n, M)`` int64 (-1 in padding), ``count (B, n)`` int64."""

    boxes: Tensor
    ids: Tensor
    classes: Tensor
    count: Tensor


_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # position += velocity each frame
_H = np.eye(4, 8)


def _xyxy(mean: np.ndarray) -> np.ndarray:
    cx, cy, w, h = mean[..., 0], mean[..., 1], np.maximum(mean[..., 2], 0), np.maximum(mean[..., 3], 0)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``(n, 4)`` and ``(m, 4)`` x1 y1 x2 y2 -> ``(n, m)``."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area = lambda z: np.prod(np.clip(z[:, 2:] - z[:, :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


class Tracker(StreamModule):
    """:class:`~streamlmu.vision.detect.Boxes` per frame -> :class:`Tracks` with ids stable across frames.

    Args:
        max_tracks: track slots per stream (``M``); detections beyond the free slots start no track.
        min_iou: the least overlap of a detection with a track's prediction to continue it.
        max_age: frames a track survives unmatched (its box is not reported while it is unmatched).
        min_hits: matched frames before a track is reported.
    """

    output_frame = Frame((None, 4), ("tracks", "xyxy"), "float", "frames")
    input_frame = Frame((None, 4), ("detections", "xyxy"), "float", "frames")

    def __init__(self, max_tracks: int = 64, min_iou: float = 0.3, max_age: int = 5, min_hits: int = 1):
        super().__init__()
        if max_tracks < 1 or not 0.0 < min_iou <= 1.0 or max_age < 0 or min_hits < 1:
            raise ValueError(f"need max_tracks >= 1, min_iou in (0, 1], max_age >= 0, min_hits >= 1 "
                             f"(got {max_tracks}, {min_iou}, {max_age}, {min_hits})")
        self.max_tracks, self.min_iou, self.max_age, self.min_hits = max_tracks, min_iou, max_age, min_hits

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> TrackState:
        b, m = batch_size, self.max_tracks
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.int64, device=device)  # noqa: E731
        return TrackState(torch.zeros(b, m, 8, dtype=torch.float64, device=device),
                          torch.zeros(b, m, 8, 8, dtype=torch.float64, device=device),
                          zeros(b, m), zeros(b, m), zeros(b, m), zeros(b, m), zeros(b))

    @staticmethod
    def _noise(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Process and measurement noise covariances scaled by a track's size (as DeepSORT does)."""
        size = max(float(np.hypot(mean[2], mean[3])), 1.0)
        q = np.diag(np.square([size / 20] * 4 + [size / 160] * 4))
        r = np.diag(np.square([size / 20] * 4))
        return q, r

    def _step_stream(self, s: dict, boxes: np.ndarray, classes: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
        """One frame of one stream; ``s`` holds its state arrays (updated in place). Returns the reported tracks."""
        live = np.nonzero(s["ident"] > 0)[0]
        for i in live:  # predict
            q, _ = self._noise(s["mean"][i])
            s["mean"][i] = _F @ s["mean"][i]
            s["cov"][i] = _F @ s["cov"][i] @ _F.T + q
        matched_tracks, matched_dets = [], []
        if len(live) and len(boxes):
            overlap = iou(_xyxy(s["mean"][live]), boxes)
            rows, cols = linear_sum_assignment(-overlap)
            keep = overlap[rows, cols] >= self.min_iou
            matched_tracks, matched_dets = live[rows[keep]], cols[keep]
        for i, d in zip(matched_tracks, matched_dets):  # correct
            z = np.array([(boxes[d, 0] + boxes[d, 2]) / 2, (boxes[d, 1] + boxes[d, 3]) / 2,
                          boxes[d, 2] - boxes[d, 0], boxes[d, 3] - boxes[d, 1]])
            _, r = self._noise(s["mean"][i])
            p = s["cov"][i]
            gain = p @ _H.T @ np.linalg.inv(_H @ p @ _H.T + r)
            s["mean"][i] = s["mean"][i] + gain @ (z - _H @ s["mean"][i])
            s["cov"][i] = (np.eye(8) - gain @ _H) @ p
            s["hits"][i] += 1
            s["misses"][i] = 0
            s["classes"][i] = classes[d]
        for i in np.setdiff1d(live, matched_tracks):  # unmatched tracks age, and end
            s["misses"][i] += 1
            if s["misses"][i] > self.max_age:
                s["ident"][i] = 0
        free = list(np.nonzero(s["ident"] == 0)[0])
        for d in np.setdiff1d(np.arange(len(boxes)), matched_dets):  # new tracks, strongest detections first
            if not free:
                break
            i = free.pop(0)
            x1, y1, x2, y2 = boxes[d]
            s["mean"][i] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0, 0, 0, 0]
            size = max(float(np.hypot(x2 - x1, y2 - y1)), 1.0)
            s["cov"][i] = np.diag(np.square([size / 10] * 4 + [size / 16] * 4))
            s["issued"] += 1
            s["ident"][i], s["classes"][i], s["hits"][i], s["misses"][i] = s["issued"], classes[d], 1, 0
        shown = np.nonzero((s["ident"] > 0) & (s["misses"] == 0) & (s["hits"] >= self.min_hits))[0]
        return [(_xyxy(s["mean"][i]), int(s["ident"][i]), int(s["classes"][i])) for i in shown]

    def forward(self, x: Boxes, state: TrackState | None = None) -> tuple[Tracks, TrackState]:
        if not isinstance(x, Boxes):
            raise TypeError(f"x must be the Boxes a Detector gives (got {type(x).__name__})")
        batch, time = x.count.shape
        state = self.init_state(batch) if state is None else state
        if type(state) is not TrackState or state.ident.shape != (batch, self.max_tracks):
            raise ValueError(f"state must be the TrackState of {batch} streams and {self.max_tracks} tracks from "
                             f"Tracker.init_state")
        arrays = {name: value.numpy().copy() for name, value in state._asdict().items()}
        m = self.max_tracks
        out = Tracks(torch.zeros(batch, time, m, 4), torch.zeros(batch, time, m, dtype=torch.int64),
                     torch.full((batch, time, m), -1, dtype=torch.int64), torch.zeros(batch, time, dtype=torch.int64))
        boxes, classes, count = x.boxes.numpy(), x.classes.numpy(), x.count.numpy()
        for b in range(batch):
            stream = {name: value[b] for name, value in arrays.items()}
            for t in range(time):
                n = int(count[b, t])
                shown = self._step_stream(stream, boxes[b, t, :n].astype(np.float64), classes[b, t, :n])
                for k, (box, ident, cls) in enumerate(shown):
                    out.boxes[b, t, k] = torch.from_numpy(box.astype(np.float32))
                    out.ids[b, t, k], out.classes[b, t, k] = ident, cls
                out.count[b, t] = len(shown)
            arrays["issued"][b] = stream["issued"]  # a 0-d view's += made a new array
        return out, TrackState(*(torch.from_numpy(arrays[name]) for name in TrackState._fields))


def clear_mot(truth: list[list[tuple[int, tuple[float, float, float, float]]]],
              tracks: list[list[tuple[int, tuple[float, float, float, float]]]], min_iou: float = 0.5) -> dict:
    """CLEAR-MOT scores of one stream (Bernardin & Stiefelhagen 2008): per frame, ground truth and tracks as
    ``[(id, (x1, y1, x2, y2)), ...]``. A pair matched in the previous frame stays matched while it overlaps by
    ``min_iou``; the rest are assigned by IoU (Hungarian). Returns MOTA = 1 - (misses + false positives +
    id switches) / ground-truth boxes, and those counts. (py-motmetrics computes the same but fails on NumPy 2.)
    """
    if len(truth) != len(tracks):
        raise ValueError(f"truth and tracks must cover the same frames (got {len(truth)} and {len(tracks)})")
    previous: dict[int, int] = {}  # truth id -> track id it was last matched to
    misses = false_positives = switches = objects = matches = 0
    for gt, hyp in zip(truth, tracks):
        objects += len(gt)
        gt_ids, hyp_ids = [g for g, _ in gt], [h for h, _ in hyp]
        overlap = iou(np.array([b for _, b in gt], float).reshape(-1, 4), np.array([b for _, b in hyp], float).reshape(-1, 4))
        pairs = {}
        for i, g in enumerate(gt_ids):  # keep last frame's pairs that still overlap
            if g in previous and previous[g] in hyp_ids:
                j = hyp_ids.index(previous[g])
                if overlap[i, j] >= min_iou and j not in pairs.values():
                    pairs[i] = j
        rest_g = [i for i in range(len(gt_ids)) if i not in pairs]
        rest_h = [j for j in range(len(hyp_ids)) if j not in pairs.values()]
        if rest_g and rest_h:
            sub = overlap[np.ix_(rest_g, rest_h)]
            rows, cols = linear_sum_assignment(-sub)
            for r, c in zip(rows, cols):
                if sub[r, c] >= min_iou:
                    pairs[rest_g[r]] = rest_h[c]
        for i, j in pairs.items():
            g, h = gt_ids[i], hyp_ids[j]
            if g in previous and previous[g] != h:
                switches += 1
            previous[g] = h
        matches += len(pairs)
        misses += len(gt_ids) - len(pairs)
        false_positives += len(hyp_ids) - len(pairs)
    mota = 1.0 - (misses + false_positives + switches) / max(objects, 1)
    return {"mota": mota, "id_switches": switches, "misses": misses, "false_positives": false_positives,
            "matches": matches, "objects": objects}
