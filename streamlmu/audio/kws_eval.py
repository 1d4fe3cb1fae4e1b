"""Keyword-spotting evaluation on long streams: hit rate, false alarms per hour, detection latency.

A keyword occurrence is hit when an event of that keyword falls between the
word's start and ``tolerance_s`` after its end (the first such event; its
latency is event time minus word end). Every other event is a false alarm:
a wrong keyword, a keyword fired on another word or on noise, or a second
event for one occurrence.

Thresholds are calibrated on the validation split by replaying the detector
over recorded posteriors (:func:`replay`), which gives exactly the events the
live spotter gives (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from streamlmu.audio.detect import DetectorConfig, detector_init, detector_run
from streamlmu.audio.frontend import FrontEndConfig
from streamlmu.audio.kws import Event, StreamingKWS
from streamlmu.data.streams import Occurrence
from streamlmu.plots import pyplot, save_figure

THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


@dataclass
class KeywordScore:
    occurrences: int = 0
    hits: int = 0
    false_alarms: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class KWSReport:
    """Per-keyword and overall figures over ``hours`` of audio."""

    hours: float
    keywords: dict[str, KeywordScore]

    def _total(self, name: str) -> int:
        return sum(getattr(k, name) for k in self.keywords.values())

    @property
    def hit_rate(self) -> float:
        return self._total("hits") / max(self._total("occurrences"), 1)

    @property
    def false_alarms_per_hour(self) -> float:
        return self._total("false_alarms") / self.hours if self.hours else 0.0

    def latency(self, q: float = 0.5) -> float:
        values = [v for k in self.keywords.values() for v in k.latencies]
        return float(np.quantile(values, q)) if values else float("nan")

    def summary(self) -> dict:
        return {"hours": round(self.hours, 4), "occurrences": self._total("occurrences"), "hits": self._total("hits"),
                "hit_rate": round(self.hit_rate, 4), "false_alarms": self._total("false_alarms"),
                "false_alarms_per_hour": round(self.false_alarms_per_hour, 3),
                "median_latency_s": round(self.latency(0.5), 3), "p90_latency_s": round(self.latency(0.9), 3)}

    def table(self) -> str:
        lines = [f"{'keyword':<10} {'words':>6} {'hits':>6} {'rate':>7} {'false':>6} {'median latency':>15}"]
        for name, k in self.keywords.items():
            median = f"{np.median(k.latencies) * 1000:.0f} ms" if k.latencies else "-"
            lines.append(f"{name:<10} {k.occurrences:>6} {k.hits:>6} {k.hits / max(k.occurrences, 1):>7.1%} "
                         f"{k.false_alarms:>6} {median:>15}")
        s = self.summary()
        lines.append(f"{'all':<10} {s['occurrences']:>6} {s['hits']:>6} {s['hit_rate']:>7.1%} {s['false_alarms']:>6} "
                     f"{s['median_latency_s'] * 1000:>12.0f} ms")
        lines.append(f"{s['false_alarms_per_hour']:.2f} false alarms per hour over {self.hours:.2f} h of audio; "
                     f"p90 latency {s['p90_latency_s'] * 1000:.0f} ms")
        return "\n".join(lines)


def score(events: list[list[Event]], truths: list[list[Occurrence]], keywords: tuple[str, ...], seconds: float,
          tolerance_s: float = 1.0) -> KWSReport:
    """Match each stream's events to its words; ``seconds`` is the audio length of all streams together."""
    report = KWSReport(seconds / 3600, {k: KeywordScore() for k in keywords})
    for stream_events, truth in zip(events, truths):
        pending = sorted(stream_events, key=lambda e: e.t)
        used = [False] * len(pending)
        for word in truth:
            if word.word not in report.keywords:
                continue
            entry = report.keywords[word.word]
            entry.occurrences += 1
            for i, event in enumerate(pending):
                if not used[i] and event.keyword == word.word and word.start <= event.t <= word.end + tolerance_s:
                    used[i] = True
                    entry.hits += 1
                    entry.latencies.append(event.t - word.end)
                    break
        for event, matched in zip(pending, used):
            if not matched:
                report.keywords.setdefault(event.keyword, KeywordScore()).false_alarms += 1
    return report


def run_streams(kws: StreamingKWS, audio: np.ndarray, chunk_s: float = 0.1,
                progress: bool = False) -> tuple[list[list[Event]], np.ndarray, np.ndarray]:
    """Feed ``audio (streams, samples)`` at 16 kHz through ``kws`` in chunks; returns each stream's events, the
    posteriors ``(streams, frames, classes)`` and the frame energies ``(streams, frames)``."""
    from tqdm import tqdm
    kws.reset()
    step = int(chunk_s * kws.features.sample_rate)
    trace: list[tuple[np.ndarray, np.ndarray]] = []
    events: list[list[Event]] = [[] for _ in range(kws.streams)]
    for start in tqdm(range(0, audio.shape[1], step), disable=not progress, unit="chunk", leave=False,
                      desc="streaming"):
        kws.accept_waveform(audio[:, start:start + step], kws.features.sample_rate, trace=trace)
        for event in kws.poll_events():
            events[event.stream].append(event)
    return events, np.concatenate([p for p, _ in trace], axis=1), np.concatenate([e for _, e in trace], axis=1)


def replay(posteriors: np.ndarray, energy: np.ndarray, cfg: DetectorConfig, labels: tuple[str, ...],
           features: FrontEndConfig) -> list[list[Event]]:
    """The events a spotter with detector ``cfg`` fires on recorded ``posteriors (streams, frames, classes)`` and
    frame energies ``(streams, frames)``."""
    fired, scores = detector_run(posteriors, energy, detector_init(posteriors.shape[0], cfg), cfg)
    events: list[list[Event]] = [[] for _ in range(posteriors.shape[0])]
    for s, t in zip(*np.nonzero(fired >= 0)):
        events[s].append(Event(features.frame_end_s(t), labels[fired[s, t]], float(scores[s, t]), int(s)))
    return events


def _with_thresholds(kws: StreamingKWS, thresholds: dict[str, float]) -> DetectorConfig:
    values = tuple(thresholds.get(label, t) if np.isfinite(t) else t
                   for label, t in zip(kws.labels, kws.detector.thresholds))
    return replace(kws.detector, thresholds=values)


def calibrate(kws: StreamingKWS, posteriors: np.ndarray, energy: np.ndarray, truths: list[list[Occurrence]],
              seconds: float, max_false_alarms_per_hour: float, grid: tuple[float, ...] = THRESHOLD_GRID,
              verify: Callable[[list[list[Event]]], list[list[Event]]] | None = None
              ) -> tuple[dict[str, float], dict, list[dict]]:
    """Per-keyword thresholds from ``grid`` that hit the most words of these (validation) streams while their
    false alarms stay within the budget, the summary they give here, and every grid point's summary (one
    threshold for all keywords); see :func:`choose_thresholds`. ``verify``: a second stage the spotter's
    events pass through (a :class:`streamlmu.audio.verify.RecordedVerifier` over these streams), so that the
    budget holds for the events it keeps.
    """
    def run(thresholds: dict[str, float]) -> KWSReport:
        events = replay(posteriors, energy, _with_thresholds(kws, thresholds), kws.labels, kws.features)
        return score(events if verify is None else verify(events), truths, kws.keywords, seconds)

    return choose_thresholds(run, kws.keywords, grid, seconds, max_false_alarms_per_hour)


def choose_thresholds(run: Callable[[dict[str, float]], KWSReport], keywords: tuple[str, ...],
                      grid: tuple[float, ...], seconds: float, max_false_alarms_per_hour: float
                      ) -> tuple[dict[str, float], dict, list[dict]]:
    """Per-keyword thresholds from ``grid`` (ascending: its top is the strictest) for any detector that ``run``
    scores with given thresholds on ``seconds`` of streams; returns them, their summary and every grid
    point's summary (one threshold for all keywords).

    Greedy: every keyword starts at the grid's top; the move down that buys the most hits per added false
    alarm is taken while the total stays within budget. The result is checked by running it (and made
    stricter where keywords interact); where even the grid's top misses the budget, that is what it returns.
    """
    reports = [run({k: t for k in keywords}) for t in grid]
    rows = [{"threshold": t, **r.summary()} for t, r in zip(grid, reports)]
    budget = max_false_alarms_per_hour * seconds / 3600
    level = {k: len(grid) - 1 for k in keywords}

    def false_alarms(k: str, i: int) -> int:
        return reports[i].keywords[k].false_alarms

    total = sum(false_alarms(k, level[k]) for k in keywords)
    while True:
        best, best_rate = None, -1.0
        for k, i in level.items():
            for j in range(i):  # any lower threshold, so that plateaus of equal hits are crossed
                gain = reports[j].keywords[k].hits - reports[i].keywords[k].hits
                added = false_alarms(k, j) - false_alarms(k, i)
                if gain > 0 and total + added <= budget and gain / max(added, 0.5) > best_rate:
                    best, best_rate = (k, j), gain / max(added, 0.5)
        if best is None:
            break
        k, j = best
        total += false_alarms(k, j) - false_alarms(k, level[k])
        level[k] = j
    chosen = {k: grid[i] for k, i in level.items()}
    report = run(chosen)
    while report.false_alarms_per_hour > max_false_alarms_per_hour:  # interactions the greedy step missed
        raisable = [k for k in chosen if level[k] < len(grid) - 1]
        if not raisable:  # the budget cannot be met on this grid: the strictest thresholds
            break
        k = max(raisable, key=lambda k: report.keywords[k].false_alarms)
        level[k] += 1
        chosen[k] = grid[level[k]]
        report = run(chosen)
    return chosen, report.summary(), rows


def plot_stream(path: str | Path, audio: np.ndarray, posteriors: np.ndarray, labels: tuple[str, ...],
                keywords: tuple[str, ...], truth: list[Occurrence], events: list[Event], hop_s: float,
                seconds: float = 30.0, title: str = "") -> None:
    """PNG of one stream's first ``seconds``: waveform with the words, keyword posteriors, events."""
    plt = pyplot()
    rate = int(round(len(audio) / (posteriors.shape[0] * hop_s))) if posteriors.shape[0] else 16000
    samples, frames = int(seconds * rate), int(seconds / hop_s)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [1, 2]})
    top.plot(np.arange(min(samples, len(audio))) / rate, audio[:samples], lw=0.3, color="0.3")
    for word in truth:
        if word.start < seconds:
            colour = "tab:green" if word.word in keywords else "0.8"
            top.axvspan(word.start, word.end, color=colour, alpha=0.3)
            top.text(word.start, 0.9, word.word, fontsize=7, transform=top.get_xaxis_transform())
    top.set_ylabel("audio")
    t = np.arange(min(frames, posteriors.shape[0])) * hop_s
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(keywords):
        bottom.plot(t, posteriors[:len(t), labels.index(name)], lw=0.8, color=cmap(i % 10), label=name)
    for event in events:
        if event.t < seconds:
            i = keywords.index(event.keyword) if event.keyword in keywords else 0
            bottom.plot([event.t], [event.score], "v", color=cmap(i % 10), ms=8)
    bottom.set_xlabel("stream time (s)")
    bottom.set_ylabel("posterior")
    bottom.set_ylim(0, 1.05)
    bottom.legend(ncol=min(len(keywords), 6), fontsize=7, loc="upper right")
    fig.suptitle(title or "keyword posteriors (triangles: events; green: keywords spoken)")
    save_figure(fig, path)
