"""Accuracy against the frames heard, and early decisions, from one streaming pass per clip.

The LMUFormer paper (arXiv 2402.04882, its sequence-truncation figure) feeds
its non-causal spiking model the first frames of each SCv2-35 clip and reports
36 frames -> 48.77 %, 63 -> 86.92 %, 87 -> 95.17 %, 128 -> 96.12 % (87 of 128
frames: a 32.03 % shorter sequence). Here every clip is streamed once, frame
by frame, and the model's answer after each frame (from the frames heard so
far only) is kept, so one pass gives the accuracy at every length.

An early decision answers at the first frame whose top softmax posterior
reaches a threshold (else at the last frame); thresholds are log-odds
``log(p / (1 - p))``, which keep their order where float32 posteriors are 1. The threshold is chosen on a
calibration split (validation), never on the split it is reported on.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

from streamlmu.audio.frontend import FrontEndConfig
from streamlmu.data.speech_commands import SpeechCommands, collate
from streamlmu.stream import StreamModule
from streamlmu.train.evaluate import frame_operator, streaming_frame_logits

# (frames heard, accuracy) of the paper's Spiking LMUFormer on SCv2-35, read from its figure.
PAPER_POINTS: tuple[tuple[int, float], ...] = ((36, 0.4877), (63, 0.8692), (87, 0.9517), (128, 0.9612))


@dataclass(frozen=True)
class FrameLogits:
    """A model's answers after every frame: ``logits`` ``(clips, frames, classes)``, ``targets`` ``(clips,)``.

    ``paths`` are the clips' paths relative to the corpus root (None for a generated ``_silence_`` clip).
    ``correct()`` and ``confidence()`` are computed once and kept (the policies below ask for them often).
    """

    classes: tuple[str, ...]
    paths: tuple[str | None, ...]
    targets: np.ndarray
    logits: np.ndarray
    skipped: int

    @property
    def frames(self) -> int:
        return self.logits.shape[1]

    def correct(self) -> np.ndarray:
        """``(clips, frames)`` bool: is the answer after each frame right."""
        return self._correct

    def accuracy_by_frames(self) -> np.ndarray:
        """``(frames,)``: entry ``t`` is the accuracy after ``t + 1`` frames."""
        return self.correct().mean(0) if len(self.targets) else np.full(self.frames, np.nan)

    def confidence(self) -> np.ndarray:
        """``(clips, frames)``: the log-odds ``log(p / (1 - p))`` of the top softmax posterior ``p`` after each frame.

        Monotone in ``p``, but it does not saturate: a float32 posterior is
        exactly 1 once the top logit leads by about 17, its log-odds go on growing.
        """
        return self._confidence

    @cached_property
    def _correct(self) -> np.ndarray:
        return self.logits.argmax(-1) == self.targets[:, None]

    @cached_property
    def _confidence(self) -> np.ndarray:
        logits = torch.from_numpy(self.logits).double()
        top, index = logits.max(-1, keepdim=True)
        others = (logits - top).exp().scatter(-1, index, 0.0).sum(-1)  # sum over the other classes of p_j / p
        return -torch.log(others).numpy()  # others == 0 (a lead beyond float64's range): +inf


@torch.no_grad()
def frame_logits(model: StreamModule, dataset: SpeechCommands, batch_size: int = 64,
                 progress: bool = True) -> FrameLogits:
    """Stream every clip of ``dataset`` through ``model`` (loaded by ``load_model``) and keep every frame's logits."""
    classes = tuple(model.labels)
    if classes != tuple(dataset.classes):
        raise ValueError(f"the model's {len(classes)} labels differ from the dataset's {len(dataset.classes)}")
    model.eval()
    runner = frame_operator(model)
    features: FrontEndConfig = model.features
    paths, targets, logits, skipped = [], [], [], 0
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="clips", unit="batch", leave=False, disable=not progress):
        indices = range(start, min(start + batch_size, len(dataset)))
        samples = [dataset[i] for i in indices]
        waves, labels, bad = collate(samples)
        skipped += bad
        if not len(waves):
            continue
        paths += [dataset.items[i][0] for i, sample in zip(indices, samples) if sample is not None]
        targets.append(labels.numpy())
        logits.append(streaming_frame_logits(model, waves, features, runner=runner).numpy())
    shape = (0, features.clip_frames, len(classes))
    return FrameLogits(classes, tuple(paths), np.concatenate(targets) if targets else np.zeros(0, np.int64),
                       np.concatenate(logits) if logits else np.zeros(shape, np.float32), skipped)


# ---------------------------------------------------------------- word-aligned accuracy
def frames_to_hear(seconds: np.ndarray, features: FrontEndConfig) -> np.ndarray:
    """Frames a stream must have heard before its audio reaches ``seconds`` (the first frame ending after it)."""
    ends = np.array([features.frame_end_s(i) for i in range(features.clip_frames)])
    return np.searchsorted(ends, seconds, side="right") + 1


def word_spans(result: FrameLogits, metadata: dict[str, dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's word ``(onset_s, end_s)`` from a synthetic corpus's metadata; NaN where it has none."""
    onset, end = np.full(len(result.paths), np.nan), np.full(len(result.paths), np.nan)
    for i, path in enumerate(result.paths):
        row = metadata.get(path) if path is not None else None
        if row is not None:
            onset[i], end[i] = float(row["onset_s"]), float(row["end_s"])
    return onset, end


def accuracy_after_onset(result: FrameLogits, onset_s: np.ndarray, features: FrontEndConfig,
                         offsets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy ``offsets`` frames after the frame that first hears the word, and the clips counted at each.

    A clip counts at an offset while that frame is inside its ``clip_frames``; clips without a known onset never.
    """
    known = ~np.isnan(onset_s)
    correct = result.correct()[known]
    first = frames_to_hear(onset_s[known], features) - 1                     # 0-based frame index
    accuracy, clips = [], []
    for offset in offsets:
        index = first + offset
        inside = (index >= 0) & (index < result.frames)
        clips.append(int(inside.sum()))
        accuracy.append(float(correct[inside, index[inside]].mean()) if inside.any() else np.nan)
    return np.array(accuracy), np.array(clips)


def accuracy_by_word_fraction(result: FrameLogits, onset_s: np.ndarray, end_s: np.ndarray,
                              features: FrontEndConfig, fractions: Sequence[float]) -> np.ndarray:
    """Accuracy at the first frame by which ``fraction`` of each clip's word has been heard (clips with a known span)."""
    known = ~np.isnan(onset_s)
    if not known.any():
        return np.full(len(fractions), np.nan)
    correct = result.correct()[known]
    onset, end = onset_s[known], end_s[known]
    rows = np.arange(len(onset))
    accuracy = []
    for fraction in fractions:
        index = np.minimum(frames_to_hear(onset + fraction * (end - onset), features) - 1, result.frames - 1)
        accuracy.append(float(correct[rows, index].mean()))
    return np.array(accuracy)


# ---------------------------------------------------------------- early decisions
class Decisions(NamedTuple):
    """An early-decision policy on a split: frames used ``(clips,)`` (1-based) and whether each answer is right."""

    threshold: float
    frames_used: np.ndarray
    correct: np.ndarray

    @property
    def mean_frames(self) -> float:
        return float(self.frames_used.mean())

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def decide_early(result: FrameLogits, threshold: float) -> Decisions:
    """Answer at the first frame whose top posterior's log-odds (``confidence``) reach ``threshold``, else at the
    last frame.
    """
    reached = result.confidence() >= threshold
    index = np.where(reached.any(1), reached.argmax(1), result.frames - 1)
    correct = result.correct()[np.arange(len(index)), index]
    return Decisions(float(threshold), index + 1, correct)


def candidate_thresholds(confidence: np.ndarray, count: int = 200) -> np.ndarray:
    """Thresholds spanning the confidences seen (``count`` of their quantiles, each a value seen), plus one
    above all (never decide early)."""
    levels = (np.quantile(confidence, np.linspace(0.0, 1.0, count), method="inverted_cdf") if confidence.size
              else np.zeros(0))
    return np.unique(np.append(levels, np.inf))


def pareto_curve(result: FrameLogits, thresholds: Sequence[float]) -> list[Decisions]:
    """The policy at every threshold, as (mean frames used, accuracy) points; the non-dominated ones only, by frames."""
    points = sorted((decide_early(result, t) for t in thresholds), key=lambda d: (d.mean_frames, -d.accuracy))
    front: list[Decisions] = []
    for point in points:
        if not front or point.accuracy > front[-1].accuracy:
            front.append(point)
    return front


def calibrate_threshold(calibration: FrameLogits, tolerance: float = 0.01) -> Decisions:
    """The threshold with the fewest mean frames whose accuracy on ``calibration`` is within ``tolerance``
    of that split's full-clip accuracy (the returned decisions are on ``calibration``)."""
    if not len(calibration.targets):
        raise ValueError("the calibration split has no clips")
    full = calibration.accuracy_by_frames()[-1]
    best = None
    for threshold in candidate_thresholds(calibration.confidence()):
        d = decide_early(calibration, threshold)
        if d.accuracy >= full - tolerance - 1e-12 and (best is None or d.mean_frames < best.mean_frames):
            best = d
    return best


def shortest_prefix(calibration: FrameLogits, tolerance: float = 0.01) -> int:
    """The fewest frames after which the calibration split's accuracy is within ``tolerance`` of its full-clip one."""
    accuracy = calibration.accuracy_by_frames()
    return int(np.argmax(accuracy >= accuracy[-1] - tolerance - 1e-12)) + 1
