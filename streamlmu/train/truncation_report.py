"""The sequence-truncation benchmark of one or more checkpoints: a JSON-ready report, markdown and a PNG.

:func:`measure` streams a test split and a calibration split through a model
(:mod:`streamlmu.train.truncation`) and gathers, for that model:

- accuracy after every frame (one causal pass per clip);
- the shortest fixed prefix, and the early-decision threshold, whose accuracy on
  the calibration split is within ``tolerance`` of its full-clip accuracy, each
  then reported on the test split;
- the early-decision Pareto front on the test split (a description of the
  trade-off: nothing is chosen from it);
- accuracy against frames after the word's onset and the fraction of the word
  heard (synthetic corpora, whose metadata holds each word's span);
- MACs (and, for spiking models, measured SynOps) per clip, full and early.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from streamlmu.audio.frontend import clip_features
from streamlmu.data.speech_commands import SpeechCommands
from streamlmu.data.synth import read_metadata
from streamlmu.metrics import cumulative_macs, synops_per_frame
from streamlmu.models.registry import model_name
from streamlmu.plots import pyplot, save_figure
from streamlmu.stream import StreamModule
from streamlmu.train.truncation import (PAPER_POINTS, accuracy_after_onset, accuracy_by_word_fraction,
                                        calibrate_threshold, candidate_thresholds, decide_early, frame_logits,
                                        pareto_curve, shortest_prefix, word_spans)

WORD_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(11))


def frame_grid(frames: int, step: int) -> list[int]:
    """Frame counts ``step, 2 step, ...`` up to ``frames``, with the paper's points and ``frames`` itself."""
    if step < 1:
        raise ValueError(f"the frame grid step must be >= 1 (got {step})")
    grid = set(range(step, frames + 1, step)) | {t for t, _ in PAPER_POINTS if t <= frames} | {frames}
    return sorted(grid)


def _synops_per_frame(model: StreamModule, dataset: SpeechCommands, clips: int = 64) -> float | None:
    """Mean SynOps per frame of a spiking model on the first ``clips`` clips of ``dataset`` (None: not spiking)."""
    if not getattr(getattr(model, "config", None), "spiking", False):
        return None
    samples = [s for s in (dataset[i] for i in range(min(clips, len(dataset)))) if s is not None]
    if not samples:
        return None
    waves = torch.stack([w for w, _ in samples])
    return float(sum(synops_per_frame(model, clip_features(waves, model.features)).values()))


def measure(name: str, model: StreamModule, data: str, split: str = "testing", calibration_split: str = "validation",
            tolerance: float = 0.01, grid_step: int = 8, batch_size: int = 64, progress: bool = True) -> dict:
    """Everything the report says about one model (see the module docstring); JSON-ready."""
    if split == calibration_split:
        raise ValueError(f"the calibration split must differ from the reported split (both {split!r})")
    labels = len(model.labels)
    datasets = {s: SpeechCommands(data, s, labels=labels, skip_bad_files=True) for s in (split, calibration_split)}
    test = frame_logits(model, datasets[split], batch_size, progress)
    calibration = frame_logits(model, datasets[calibration_split], batch_size, progress)
    if not len(test.targets):
        raise ValueError(f"the {split} split of {data} has no readable clips")
    frames = test.frames
    accuracy = test.accuracy_by_frames()
    grid = frame_grid(frames, grid_step)

    prefix = shortest_prefix(calibration, tolerance)
    chosen = calibrate_threshold(calibration, tolerance)
    early = decide_early(test, chosen.threshold)
    front = pareto_curve(test, candidate_thresholds(test.confidence()))
    within = [d for d in front if d.accuracy >= accuracy[-1] - tolerance - 1e-12]  # the front is sorted by frames

    macs = cumulative_macs(model, frames)
    synops = _synops_per_frame(model, datasets[split])
    full_macs, early_macs = float(macs[frames]), float(macs[early.frames_used].mean())
    costs = {"macs_per_clip_full": full_macs, "macs_per_clip_early": early_macs,
             "macs_per_clip_prefix": float(macs[prefix]), "macs_saved_early": 1.0 - early_macs / full_macs}
    if synops is not None:
        costs.update(synops_per_frame=synops, synops_per_clip_full=synops * frames,
                     synops_per_clip_early=synops * early.mean_frames)

    onset, end = word_spans(test, read_metadata(data))
    offsets = list(range(0, frames, grid_step))
    after_onset, onset_clips = accuracy_after_onset(test, onset, model.features, offsets)
    return {
        "name": name, "model": model_name(model), "classes": len(test.classes), "split": split,
        "calibration_split": calibration_split, "clips": len(test.targets), "calibration_clips": len(calibration.targets),
        "skipped": test.skipped + calibration.skipped, "frames": frames, "latency_frames": model.latency_frames,
        "accuracy_by_frames": [float(a) for a in accuracy],
        "grid": grid, "full_accuracy": float(accuracy[-1]),
        "calibration_full_accuracy": float(calibration.accuracy_by_frames()[-1]),
        "fixed_prefix": {"frames": prefix, "accuracy": float(accuracy[prefix - 1]),
                         "reduction": 1.0 - prefix / frames},
        "early_decision": {"threshold": _finite(chosen.threshold), "calibration_mean_frames": chosen.mean_frames,
                           "calibration_accuracy": chosen.accuracy, "mean_frames": early.mean_frames,
                           "accuracy": early.accuracy, "reduction": 1.0 - early.mean_frames / frames,
                           "within_tolerance": bool(early.accuracy >= accuracy[-1] - tolerance - 1e-12)},
        "pareto_within_tolerance": {"threshold": _finite(within[0].threshold), "mean_frames": within[0].mean_frames,
                                    "accuracy": within[0].accuracy,
                                    "reduction": 1.0 - within[0].mean_frames / frames},
        "pareto": [{"threshold": _finite(d.threshold), "mean_frames": d.mean_frames, "accuracy": d.accuracy} for d in front],
        "costs": costs,
        "word_aligned": {
            "clips": int((~np.isnan(onset)).sum()),
            "frames_after_onset": offsets, "accuracy_after_onset": _floats(after_onset),
            "clips_after_onset": [int(c) for c in onset_clips],
            "word_fractions": list(WORD_FRACTIONS),
            "accuracy_by_word_fraction": _floats(accuracy_by_word_fraction(test, onset, end, model.features,
                                                                           WORD_FRACTIONS)),
        },
    }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a threshold above every posterior (never decide early) is None."""
    return None if np.isinf(value) else float(value)


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _threshold(log_odds: float | None) -> str:
    """A log-odds threshold with the posterior it stands for."""
    if log_odds is None:
        return "never early"
    doubt = 1.0 / (1.0 + math.exp(min(log_odds, 700.0)))  # 1 - posterior
    posterior = f"1 − {doubt:.1e}" if doubt < 1e-3 else f"{1 - doubt:.4f}"
    return f"{log_odds:.2f} (p {posterior})"


def markdown(reports: Sequence[dict], tolerance: float = 0.01) -> str:
    """The reports as markdown: a summary per model, accuracy against frames, word-aligned accuracy."""
    paper = dict(PAPER_POINTS)
    lines = ["# Sequence truncation", "",
             f"Split `{reports[0]['split']}`; thresholds and prefixes chosen on `{reports[0]['calibration_split']}` "
             f"(within {100 * tolerance:g} point of its full-clip accuracy). Frames are 10 ms; a 1 s clip is 98 "
             f"frames padded to {reports[0]['frames']}. The paper's points: Spiking LMUFormer on the real SCv2-35, "
             "non-causal (arXiv 2402.04882). The last column reads the test split's own Pareto front "
             "(hindsight: a bound on what a threshold could give, not a threshold to deploy).", "",
             "| model | clips | full clip % | fixed prefix: frames (fewer) | % | early decision: log-odds threshold | "
             "mean frames (fewer) | % | MACs per clip, full → early | SynOps per clip, full → early | "
             "test front within tolerance: mean frames (fewer) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        fixed, early, costs = r["fixed_prefix"], r["early_decision"], r["costs"]
        synops = (f"{costs['synops_per_clip_full']:,.0f} → {costs['synops_per_clip_early']:,.0f} "
                  f"(−{100 * (1 - costs['synops_per_clip_early'] / costs['synops_per_clip_full']):.1f} %)"
                  if "synops_per_frame" in costs else "–")
        lines.append(
            f"| {r['name']} | {r['clips']} | {_pct(r['full_accuracy'])} | {fixed['frames']} "
            f"({100 * fixed['reduction']:.1f} %) | {_pct(fixed['accuracy'])} | {_threshold(early['threshold'])} | "
            f"{early['mean_frames']:.1f} ({100 * early['reduction']:.1f} %) | {_pct(early['accuracy'])} | "
            f"{costs['macs_per_clip_full']:,.0f} → {costs['macs_per_clip_early']:,.0f} "
            f"(−{100 * costs['macs_saved_early']:.1f} %) | {synops} | "
            f"{r['pareto_within_tolerance']['mean_frames']:.1f} ({100 * r['pareto_within_tolerance']['reduction']:.1f} %) |")
    grid = sorted(set().union(*(r["grid"] for r in reports)))
    lines += ["", "## Accuracy (%) after each number of frames", "",
              "| frames | " + " | ".join(r["name"] for r in reports) + " | paper |",
              "| --- |" + " --- |" * (len(reports) + 1)]
    for t in grid:
        cells = [_pct(r["accuracy_by_frames"][t - 1]) if t <= r["frames"] else "–" for r in reports]
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {_pct(paper.get(t))} |")
    aligned = [r for r in reports if r["word_aligned"]["clips"]]
    if aligned:
        lines += ["", "## Accuracy (%) against the fraction of the word heard", "",
                  "| word heard | " + " | ".join(r["name"] for r in aligned) + " |",
                  "| --- |" + " --- |" * len(aligned)]
        for i, fraction in enumerate(WORD_FRACTIONS):
            cells = [_pct(r["word_aligned"]["accuracy_by_word_fraction"][i]) for r in aligned]
            lines.append(f"| {100 * fraction:.0f} % | " + " | ".join(cells) + " |")
        lines += ["", "## Accuracy (%) against the frames heard since the word's onset", "",
                  "| frames after onset | " + " | ".join(f"{r['name']} | clips" for r in aligned) + " |",
                  "| --- |" + " --- | --- |" * len(aligned)]
        for i, offset in enumerate(aligned[0]["word_aligned"]["frames_after_onset"]):
            cells = [f"{_pct(r['word_aligned']['accuracy_after_onset'][i])} | {r['word_aligned']['clips_after_onset'][i]}"
                     for r in aligned if i < len(r["word_aligned"]["frames_after_onset"])]
            lines.append(f"| {offset} | " + " | ".join(cells) + " |")
    else:
        lines += ["", "No word-aligned accuracy: the corpus has no metadata.csv with word onsets (the real SCv2)."]
    return "\n".join(lines) + "\n"


def plot(reports: Sequence[dict], path: str | Path) -> Path:
    """Four panels: accuracy against frames heard (with the paper's points), the early-decision Pareto fronts,
    and accuracy against frames since the word's onset and against the fraction of the word heard."""
    fig, axes = pyplot().subplots(2, 2, figsize=(13, 9.5))
    (frames_ax, pareto_ax), (onset_ax, word_ax) = axes
    for r in reports:
        t = np.arange(1, r["frames"] + 1)
        line, = frames_ax.plot(t, 100 * np.array(r["accuracy_by_frames"]), label=r["name"])
        front = r["pareto"]
        pareto_ax.plot([p["mean_frames"] for p in front], [100 * p["accuracy"] for p in front],
                       color=line.get_color(), label=f"{r['name']}: early decision")
        pareto_ax.plot(t, 100 * np.array(r["accuracy_by_frames"]), color=line.get_color(), ls=":", lw=1,
                       label=f"{r['name']}: fixed prefix")
        early = r["early_decision"]
        pareto_ax.plot(early["mean_frames"], 100 * early["accuracy"], "o", color=line.get_color())
        aligned = r["word_aligned"]
        if aligned["clips"]:
            onset_ax.plot(aligned["frames_after_onset"],
                          [np.nan if a is None else 100 * a for a in aligned["accuracy_after_onset"]],
                          marker=".", color=line.get_color(), label=r["name"])
            word_ax.plot(100 * np.array(aligned["word_fractions"]),
                         [np.nan if a is None else 100 * a for a in aligned["accuracy_by_word_fraction"]],
                         marker=".", color=line.get_color(), label=r["name"])
    px, py = zip(*PAPER_POINTS)
    frames_ax.plot(px, [100 * p for p in py], "k*", ms=10, label="paper (non-causal, real SCv2-35)")
    frames_ax.set(xlabel="frames heard (10 ms each)", ylabel="accuracy (%)", ylim=(0, 100),
                  title="accuracy after t frames (one causal pass)")
    pareto_ax.set(xlabel="mean frames used per clip", ylabel="accuracy (%)", ylim=(0, 100),
                  title="early decision (dot: threshold chosen on validation)")
    onset_ax.set(xlabel="frames heard since the word's onset", ylabel="accuracy (%)", ylim=(0, 100),
                 title="aligned to the word's onset (synthetic corpus)")
    word_ax.set(xlabel="fraction of the word heard (%)", ylabel="accuracy (%)", ylim=(0, 100),
                title="aligned to the word's span (synthetic corpus)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)
