"""pocketsphinx 5.1 keyword search, a classic recogniser trained on real speech, as a peer of the spotter.

Its US English acoustic model and dictionary ship inside the ``pocketsphinx``
wheel. Keyword search listens for each keyword with its own detection
threshold; after a detection the search restarts. The thresholds are chosen
on validation streams as ``kws-eval --calibrate`` chooses the spotter's
(:func:`streamlmu.audio.kws_eval.choose_thresholds`): per keyword, the most
hits within the false-alarm budget.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from streamlmu.audio.kws import Event
from streamlmu.audio.kws_eval import KWSReport, choose_thresholds, score
from streamlmu.data.streams import Occurrence

THRESHOLDS = (1e-30, 1e-20, 1e-10, 1e-5, 1.0, 1e5, 1e10, 1e20, 1e30)  # strictest last; short words need large ones
CHUNK = 1600  # samples per call, 0.1 s as the spotter gets them


def spot(audio: np.ndarray, thresholds: dict[str, float], stream: int = 0) -> list[Event]:
    """Keyword-search events for the keywords of ``thresholds`` on ``audio (samples,)`` float at 16 kHz
    (times: the end of the detected word)."""
    from pocketsphinx import Decoder

    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "keywords.kws"
        listing.write_text("".join(f"{k} /{t:g}/\n" for k, t in thresholds.items()))
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
                if word in thresholds:
                    events.append(Event((offset + segment.end_frame + 1) * 0.01, word, 1.0, stream))
            decoder.end_utt()
            offset = (start + CHUNK) // 160
            decoder.start_utt()
    decoder.end_utt()
    return events


def evaluate(audio: np.ndarray, truths: list[list[Occurrence]], keywords: tuple[str, ...],
             thresholds: dict[str, float]) -> tuple[KWSReport, float]:
    """Hits, false alarms and latency on streams ``audio (streams, samples)``, and the real-time factor."""
    start = time.perf_counter()
    events = [spot(row, thresholds, i) for i, row in enumerate(audio)]
    elapsed = time.perf_counter() - start
    seconds = audio.shape[0] * audio.shape[1] / 16000
    return score(events, truths, keywords, seconds), elapsed / seconds


def calibrate(audio: np.ndarray, truths: list[list[Occurrence]], keywords: tuple[str, ...],
              max_false_alarms_per_hour: float) -> tuple[dict[str, float], dict]:
    """Per-keyword thresholds of :data:`THRESHOLDS` with the most hits on these (validation) streams within the
    budget (the strictest where none is), and their summary."""
    seconds = audio.shape[0] * audio.shape[1] / 16000
    chosen, summary, _ = choose_thresholds(lambda t: evaluate(audio, truths, keywords, t)[0], keywords, THRESHOLDS,
                                           seconds, max_false_alarms_per_hour)
    return chosen, summary
