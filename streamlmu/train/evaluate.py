"""Accuracy of a keyword-spotting model, offline and streaming, with a per-class table and a confusion matrix.

Offline: the front end's frames of each whole clip, padded to ``clip_frames``
(:func:`streamlmu.audio.frontend.clip_features`), through ``model.classify``
(the training path). Streaming: the clip's audio in hops of ``hop_samples``
through the pipeline ``front end | model`` (the Numba engine for the
LMUFormers, one frame at a time), then the same zero frames as the offline
padding; the decision is the last frame's. Both see the same frames, so their predictions agree unless two
logits tie to within float error.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from streamlmu.audio.frontend import FrontEndConfig, clip_audio, clip_features, streaming_frontend
from streamlmu.data.speech_commands import SpeechCommands, collate
from streamlmu.plots import pyplot, save_figure
from streamlmu.stream import StreamModule

MODES = ("offline", "streaming")


class Evaluation(NamedTuple):
    """Predictions of one mode: targets and predictions ``(clips,)`` int64, logits ``(clips, classes)``."""

    classes: tuple[str, ...]
    targets: np.ndarray
    predictions: np.ndarray
    logits: np.ndarray
    skipped: int
    paths: tuple[str | None, ...] = ()  # each clip's path in the corpus (None: a _silence_ clip)

    @property
    def accuracy(self) -> float:
        return float((self.targets == self.predictions).mean()) if len(self.targets) else float("nan")

    def confusion(self) -> np.ndarray:
        """``(classes, classes)`` counts: row = true class, column = predicted."""
        n = len(self.classes)
        return np.bincount(self.targets * n + self.predictions, minlength=n * n).reshape(n, n)


@torch.no_grad()
def offline_logits(model: StreamModule, waves: Tensor, features: FrontEndConfig) -> Tensor:
    """Whole clips: ``(batch, samples)`` -> logits ``(batch, classes)``."""
    return model.classify(clip_features(waves, features))


def frame_operator(model: StreamModule) -> StreamModule:
    """What steps ``model`` one frame at a time: its compiled engine where it has one, else the model."""
    return model.streaming() if hasattr(model, "streaming") else model


@torch.no_grad()
def streaming_frame_logits(model: StreamModule, waves: Tensor, features: FrontEndConfig, hop_samples: int = 160,
                           runner: StreamModule | None = None) -> Tensor:
    """Clips streamed hop by hop through ``front end | runner``: ``(batch, samples)`` -> ``(batch, clip_frames,
    classes)``.

    Entry ``[:, t]`` is what the model answers after frame ``t + 1``, from frames ``<= t + 1`` only;
    frames past the audio are the offline zero padding. ``runner`` is the per-frame operator
    (default: :func:`frame_operator` of the model).
    """
    pipe = streaming_frontend(features) | (frame_operator(model) if runner is None else runner)
    audio = clip_audio(waves, features)[..., :(features.clip_frames - 1) * features.hop + features.window_size]
    state = pipe.init_state(waves.shape[0])
    logits: list[Tensor] = []
    for chunk in audio.split(hop_samples, dim=1):  # at most clip_frames frames
        out, state = pipe(chunk, state)
        logits.append(out)
    heard = sum(out.shape[1] for out in logits)
    runner, state = pipe[1], state[1]
    silence = waves.new_zeros(waves.shape[0], 1, features.feature_size)
    for _ in range(features.clip_frames - heard):  # the offline zero padding, frame by frame
        out, state = runner(silence, state)
        logits.append(out)
    return torch.cat(logits, dim=1)


def streaming_logits(model: StreamModule, waves: Tensor, features: FrontEndConfig, hop_samples: int = 160,
                     runner: StreamModule | None = None) -> Tensor:
    """The last frame of :func:`streaming_frame_logits`: ``(batch, samples)`` -> ``(batch, classes)``."""
    return streaming_frame_logits(model, waves, features, hop_samples, runner)[:, -1]


def evaluate(model: StreamModule, dataset: SpeechCommands, mode: str = "offline", batch_size: int = 64,
             progress: bool = True) -> Evaluation:
    """Run ``model`` (with ``.labels`` and ``.features`` as ``load_model`` sets them) over ``dataset``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    classes = tuple(model.labels)
    if classes != tuple(dataset.classes):
        raise ValueError(f"the model's {len(classes)} labels differ from the dataset's {len(dataset.classes)} "
                         f"(a {len(classes)}-label model needs --labels {len(classes)})")
    if len(dataset) == 0:
        raise ValueError(f"the {dataset.subset} split of {dataset.root} holds no clips (its list file names none, or "
                         f"none of its files exist); there is nothing to evaluate")
    model.eval()
    runner = frame_operator(model) if mode == "streaming" else None  # compiled once, not per batch
    targets, logits, paths, skipped = [], [], [], 0
    batches = [range(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    for batch in tqdm(batches, desc=mode, unit="batch", leave=False, disable=not progress):
        items = [(i, dataset[i]) for i in batch]
        kept = [(i, item) for i, item in items if item is not None]
        skipped += len(items) - len(kept)
        if not kept:
            continue
        waves, labels, _ = collate([item for _, item in kept])
        if mode == "offline":
            out = offline_logits(model, waves, model.features)
        else:
            out = streaming_logits(model, waves, model.features, runner=runner)
        targets.append(labels.numpy())
        logits.append(out.numpy())
        paths += [dataset.items[i][0] for i, _ in kept]
    all_logits = np.concatenate(logits) if logits else np.zeros((0, len(classes)), np.float32)
    all_targets = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    return Evaluation(classes, all_targets, all_logits.argmax(1), all_logits, skipped, tuple(paths))


def check_column(metadata: dict[str, dict[str, str]], column: str) -> None:
    """An error unless ``column`` is a column of the corpus's ``metadata.csv`` rows ``metadata``."""
    columns = next(iter(metadata.values())).keys() if metadata else ()
    if column not in columns:
        raise ValueError(f"cannot break accuracy down by {column!r}: " + (
            f"metadata.csv has the columns {', '.join(columns)}" if columns else
            "the corpus has no metadata.csv (only synthetic corpora have one)"))


def accuracy_by(result: Evaluation, metadata: dict[str, dict[str, str]], column: str) -> dict[str, tuple[int, int]]:
    """Correct and total clips per value of a ``metadata.csv`` column (a synthetic corpus's: engine, voice,
    condition...): ``{value: (correct, clips)}``, values sorted; clips without a row (``_silence_``) count under
    ``"(none)"``."""
    check_column(metadata, column)
    groups: dict[str, list[int]] = {}
    for path, ok in zip(result.paths, result.targets == result.predictions):
        row = metadata.get(path) if path is not None else None
        value = (row[column] or "(empty)") if row is not None else "(none)"
        counts = groups.setdefault(value, [0, 0])
        counts[0] += int(ok)
        counts[1] += 1
    return {value: (counts[0], counts[1]) for value, counts in sorted(groups.items())}


def class_table(result: Evaluation) -> str:
    """A per-class text table: clips, accuracy (recall), precision, and the most frequent confusion."""
    conf = result.confusion()
    lines = [f"{'class':<12} {'clips':>5} {'recall':>7} {'precision':>9}  most confused with"]
    for i, name in enumerate(result.classes):
        total, predicted = conf[i].sum(), conf[:, i].sum()
        recall = conf[i, i] / total if total else float("nan")
        precision = conf[i, i] / predicted if predicted else float("nan")
        others = conf[i].copy()
        others[i] = 0
        worst = f"{result.classes[others.argmax()]} ({others.max()})" if others.max() else ""
        lines.append(f"{name:<12} {total:>5} {recall:>7.3f} {precision:>9.3f}  {worst}")
    return "\n".join(lines)


def plot_confusion(result: Evaluation, path: str | Path, title: str = "") -> Path:
    """Write the row-normalised confusion matrix as a PNG."""
    plt = pyplot()

    conf = result.confusion().astype(float)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    n = len(result.classes)
    size = max(5.0, 0.28 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), result.classes, rotation=90, fontsize=7)
    ax.set_yticks(range(n), result.classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {result.accuracy:.4f} on {len(result.targets)} clips")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    return save_figure(fig, path, dpi=120)
