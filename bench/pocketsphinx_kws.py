"""pocketsphinx 5.1 keyword search, a classic recogniser trained on real speech, as a peer of the spotter.

Its US English acoustic model and dictionary ship inside the ``pocketsphinx``
wheel. Keyword search listens for each keyword with a detection threshold
(the same for all here); after a detection the search restarts. The
threshold is chosen on validation streams the way ``kws-eval --calibrate``
chooses the spotter's: the most hits within the false-alarm budget.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from streamlmu.audio.kws import Event
from streamlmu.audio.kws_eval import KWSReport, score
from streamlmu.data.streams import Occurrence

THRESHOLDS = (1e30, 1e20, 1e10, 1e5, 1.0, 1e-5, 1e-10, 1e-20, 1e-30)  # strictest first; short words need large ones
CHUNK = 1600  # samples per call, 0.1 s as the spotter gets them


def spot(audio: np.ndarray, keywords: tuple[str, ...], threshold: float, stream: int = 0) -> list[Event]:
    """Keyword-search events on ``audio (samples,)`` float at 16 kHz (times: the end of the detected word)."""
    from pocketsphinx import Decoder

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "keywords.kws"
        listing.write_text("".join(f"{k} /{threshold:g}/\n" for k in keywords))
        decoder = Decoder(kws=str(listing), loglevel="FATAL", samprate=16000.0)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    events: list[Event] = []
    decoder.start_utt()
    offset = 0  # frames (10 ms) before the current search
    for start in range(0, len(pcm), CHUNK):
        decoder.process_raw(pcm[start:start + CHUNK].tobytes(), False, False)
        if decoder.hyp() is not None:
            for segment in decoder.seg():
                word = segment.word.strip()
                if word in keywords:
                    events.append(Event((offset + segment.end_frame + 1) * 0.01, word, 1.0, stream))
            decoder.end_utt()
            offset = (start + CHUNK) // 160
            decoder.start_utt()
    decoder.end_utt()
    return events


def evaluate(audio: np.ndarray, truths: list[list[Occurrence]], keywords: tuple[str, ...],
             threshold: float) -> tuple[KWSReport, float]:
    """Hits, false alarms and latency on streams ``audio (streams, samples)``, and the real-time factor."""
    start = time.perf_counter()
    events = [spot(row, keywords, threshold, i) for i, row in enumerate(audio)]
    elapsed = time.perf_counter() - start
    seconds = audio.shape[0] * audio.shape[1] / 16000
    return score(events, truths, keywords, seconds), elapsed / seconds


def calibrate(audio: np.ndarray, truths: list[list[Occurrence]], keywords: tuple[str, ...],
              max_false_alarms_per_hour: float) -> tuple[float, dict]:
    """The threshold of :data:`THRESHOLDS` with the most hits on these (validation) streams within the budget
    (the strictest one when none is), and its summary."""
    best = None
    for threshold in THRESHOLDS:
        report, _ = evaluate(audio, truths, keywords, threshold)
        within = report.false_alarms_per_hour <= max_false_alarms_per_hour
        key = (within, report.hit_rate if within else -report.false_alarms_per_hour)
        if best is None or key > best[0]:
            best = (key, threshold, report.summary())
    return best[1], best[2]
