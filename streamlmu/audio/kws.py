"""Real-time keyword spotting over many audio streams: ``StreamingKWS``.

A session over the keyword pipeline (:func:`streamlmu.audio.kws_pipeline.keyword_pipeline`), one
stream operator from samples to detections::

    audio -> resample to the model's rate -> front end (fbank or speech embedding) + speech-gate energy
          -> model frame (streaming engine, all streams in one step)
          -> mean of the per-frame logits over the last ``window_frames`` -> softmax -> detector -> detections

The session adds what a product needs around it: audio of any dtype and rate, an event queue, an
optional second-stage verifier, statistics, JSON. Its whole stream state is ``kws.state`` (a pytree of
tensors: save it with :func:`streamlmu.stream.save_state` mid-word and load it to resume with the same
events). The session owns that state and donates it to the pipeline, which updates parts of it in place:
to keep a snapshot in memory, copy it (``tree_map(torch.clone, kws.state)``).

The model's own head averages its features over every frame since the
stream began, which suits 1 s clips, not an endless stream. The head is
affine, so the engine's per-frame logits (``pooling="frame"``) averaged over a
sliding window equal the head on the window's mean features: a 1 s window
(100 fbank frames, 12 speech embeddings) matches what the model saw in training.
A front end whose every frame already hears the whole window (the ASR encoder,
one frame per 1 s window) is read one frame at a time, each from the model's initial
state: a per-window classifier, as it was trained. The Legendre memory,
convolutions and neurons forget on their own (the memory spans ``theta``
frames), so the state stays bounded for any stream length.

Times are stream times in seconds since the stream began (or was last reset):
a frame counts as heard when its last sample has arrived.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from streamlmu.audio import verify
from streamlmu.audio.bundle import load_model
from streamlmu.audio.detect import DEFAULT_THRESHOLD, DetectorConfig, keyword_thresholds
from streamlmu.audio.frontend import FrontEndConfig, frame_hears
from streamlmu.audio.kws_pipeline import Detections, SpeechFrames, keyword_pipeline
from streamlmu.audio.resample import Resample
from streamlmu.audio.sources import pcm_to_float
from streamlmu.engine import DEFAULT_BLAS_MIN_BATCH
from streamlmu.metrics import LatencyHistogram
from streamlmu.stream import Pipeline, State, register_state

MAX_QUEUED_EVENTS = 10_000
DEFAULT_WARMUP_S = 0.8  # a fresh state on background noise can score a keyword near 1.0 for about 0.7 s


@register_state
class KWSState(NamedTuple):
    """A spotter session's whole stream state: the keyword pipeline's and the verifier's (None without one)."""

    pipeline: State
    verifier: verify.VerifierState | None


class Event(NamedTuple):
    """A detection: ``t`` stream time in seconds, ``keyword``, smoothed posterior ``score``, ``stream`` index."""

    t: float
    keyword: str
    score: float
    stream: int = 0

    def to_dict(self) -> dict:
        return {"t": round(self.t, 3), "keyword": self.keyword, "score": round(self.score, 4), "stream": self.stream}


def detection_events(found: Detections, labels: tuple[str, ...], features: FrontEndConfig) -> list[tuple[int, Event]]:
    """The detections of a chunk as ``(column, Event)``: the column of the firing frame in the chunk, and the
    event with its stream time and its row as ``stream``; row by row, in time order."""
    fired, score, frame = found.keyword.numpy(), found.score.numpy(), found.frame.numpy()
    return [(int(t), Event(float(features.frame_end_s(int(frame[row, t]))), labels[fired[row, t]],
                           float(score[row, t]), int(row)))
            for row, t in zip(*np.nonzero(fired >= 0))]


@dataclass
class KWSStats:
    """What the spotter has processed: per-hop compute times are in ``hop_seconds``."""

    audio_seconds: float = 0.0
    frames: int = 0
    events: int = 0
    dropped_events: int = 0
    clipped_samples: int = 0
    rejected_chunks: int = 0
    rejected_events: int = 0  # detections the verifier did not confirm


class StreamingKWS:
    """A keyword spotter for ``streams`` synchronous audio streams.

    Args:
        model: a trained LMUFormer / Spiking LMUFormer with ``labels`` and
            ``features`` (what :func:`streamlmu.load_model` returns).
        streams: how many streams every ``accept_waveform`` call carries.
        keywords: labels that may fire (default: every label except
            ``_unknown_`` and ``_silence_``).
        threshold: smoothed posterior a keyword must reach; one value or one per keyword
            (default: the thresholds calibrated for the model, stored in its
            checkpoint, else :data:`streamlmu.audio.detect.DEFAULT_THRESHOLD`).
        rearm_fraction: a keyword fires again only after its score fell below
            this fraction of its threshold.
        window_s, smooth_s, patience_s, refractory_s: the logit window, the
            posterior smoothing, the time over the threshold before firing, and
            the silence after an event on the same stream.
        speech_gate_s: a keyword fires only this soon after speech was heard
            (negative: no gate; see :mod:`streamlmu.audio.detect`).
        warmup_s: no keyword fires in a stream's first seconds after it began or
            was reset, while the model state and the logit window fill.
        blas_min_batch, int8_min_batch: from how many streams the engine's dense
            layers run on BLAS, and as int8 products (None: never; see
            :mod:`streamlmu.engine`).
        threads: threads of the speech-embedding front end's ONNX model (a filterbank front end and the engine
            use torch's threads).
        verifier: a clip classifier (model, checkpoint file or bundled name) that
            must confirm each detection on the second of audio that ends
            ``verify_delay_s`` after it, with a posterior of at least
            ``verify_threshold`` for the keyword (see :mod:`streamlmu.audio.verify`).
            Confirmed events carry the confirmation time; None: no second stage.

    >>> kws = StreamingKWS.from_pretrained("lmuformer-tiny-synth35", keywords=("yes", "no"))
    >>> kws.accept_waveform(np.zeros(16000, np.float32), 16000)
    98
    >>> kws.poll_events()
    []
    """

    def __init__(self, model: torch.nn.Module, streams: int = 1, keywords: tuple[str, ...] | None = None,
                 threshold: float | dict[str, float] | None = None, rearm_fraction: float = 0.5, window_s: float = 1.0,
                 smooth_s: float = 0.05, patience_s: float = 0.03, refractory_s: float = 0.3, speech_gate_s: float = 0.4,
                 warmup_s: float = DEFAULT_WARMUP_S,
                 blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH, int8_min_batch: int | None = None,
                 threads: int = 1, verifier: torch.nn.Module | str | Path | None = None,
                 verify_delay_s: float = verify.DEFAULT_DELAY_S, verify_threshold: float = verify.DEFAULT_THRESHOLD):
        if streams < 1:
            raise ValueError(f"streams must be >= 1 (got {streams})")
        self.labels: tuple[str, ...] = tuple(model.labels)
        self.features: FrontEndConfig = model.features
        self.streams = streams
        hop_s = self.features.frame_shift_ms / 1000
        frames = (lambda seconds, least: max(least, int(round(seconds / hop_s))))
        if threshold is None:  # the model's calibrated keywords and thresholds, if it has them
            threshold = dict(getattr(model, "thresholds", None) or {})
            if keywords is None and threshold:
                keywords = tuple(threshold)
            threshold = {k: t for k, t in threshold.items() if k in keywords} if threshold else DEFAULT_THRESHOLD
        thresholds = keyword_thresholds(self.labels, keywords, threshold)
        self.keywords = tuple(label for label, value in zip(self.labels, thresholds) if np.isfinite(value))
        self.detector = DetectorConfig(thresholds, rearm_fraction,
                                       smooth_frames=frames(smooth_s, 1), patience_frames=frames(patience_s, 1),
                                       refractory_frames=frames(refractory_s, 0),
                                       speech_gate_frames=frames(speech_gate_s, 0) if speech_gate_s >= 0 else -1,
                                       warmup_frames=frames(warmup_s, 0),
                                       vad_rise=DetectorConfig.vad_rise * self.features.frame_shift_ms / 10.0)
        per_frame = frame_hears(self.features, window_s)
        self.window_frames = 1 if per_frame else frames(window_s, 1)
        self.pipeline = keyword_pipeline(model, self.detector, self.window_frames, blas_min_batch=blas_min_batch,
                                         int8_min_batch=int8_min_batch, threads=threads, donate_state=True,
                                         fresh_state=per_frame)
        self.verifier = None if verifier is None else self._verifier(verifier, verify_delay_s, verify_threshold)
        self.stats, self.hop_seconds = KWSStats(), LatencyHistogram()
        self.reset()
        self.accept_waveform(np.zeros((streams, self.features.window_size), np.float32), self.features.sample_rate)
        self.reset()  # that hop loaded the compiled kernels, so the first real hop is timed like any other
        self.stats, self.hop_seconds = KWSStats(), LatencyHistogram()

    def _verifier(self, model: torch.nn.Module | str | Path, delay_s: float, threshold: float) -> verify.Verifier:
        if not isinstance(model, torch.nn.Module):
            model = load_model(model)
        rate = getattr(getattr(model, "features", None), "sample_rate", None)
        if rate != self.features.sample_rate:
            raise ValueError(f"the verifier must take {self.features.sample_rate} Hz audio, as the spotter "
                             f"(it takes {rate})")
        return verify.Verifier(model, self.keywords, delay_s, threshold)

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path, **kwargs) -> "StreamingKWS":
        """A spotter over a checkpoint file or a bundled model's name (see :mod:`streamlmu.pretrained`)."""
        return cls(load_model(path_or_name), **kwargs)

    # ------------------------------------------------------------ state
    def reset(self, stream: int | None = None) -> None:
        """Start stream ``stream`` (every stream if None) afresh: its time restarts at 0, its history is dropped."""
        if stream is None:
            self.pipeline = Pipeline(*self.pipeline.stages[-3:])  # the model's rate until other audio arrives
            self.state = KWSState(self.pipeline.init_state(self.streams),
                                  None if self.verifier is None else self.verifier.init_state(self.streams))
            self._events: list[Event] = []
            return
        if not 0 <= stream < self.streams:
            raise ValueError(f"stream must be in [0, {self.streams}) (got {stream})")
        mask = torch.arange(self.streams) == stream
        self.state = KWSState(self.pipeline.reset(self.state.pipeline, mask),
                              None if self.verifier is None else self.verifier.reset(self.state.verifier, mask))

    def _at_rate(self, sample_rate: int) -> None:
        """Put a resampler from ``sample_rate`` in front of the pipeline (or take it away), keeping the rest's state."""
        first = self.pipeline.stages[0]
        rate = first.orig_rate if isinstance(first, Resample) else self.features.sample_rate
        if sample_rate == rate:
            return
        core, state = self.pipeline.stages[-3:], self.state.pipeline[-3:]
        if sample_rate == self.features.sample_rate:
            self.pipeline = Pipeline(*core)
        else:
            resample = Resample(sample_rate, self.features.sample_rate)
            self.pipeline, state = Pipeline(resample, *core), (resample.init_state(self.streams),) + state
        self.state = self.state._replace(pipeline=state)

    @property
    def _frames_heard(self) -> int:
        """Frames every stream has been given on the shared clock of the front end (resets do not restart it)."""
        return self.features.num_frames(int(self.state.pipeline[-3][0].samples[0]))

    # ------------------------------------------------------------ audio in
    def _as_batch(self, samples: object) -> np.ndarray:
        """``(samples,)`` or ``(streams, samples)`` audio of any numeric dtype as float32 ``(streams, n)``."""
        if isinstance(samples, torch.Tensor):
            samples = samples.detach().cpu().numpy()
        audio = pcm_to_float(np.asarray(samples))
        if audio.ndim == 1 and self.streams == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[0] != self.streams:
            expected = "(samples,) or (1, samples)" if self.streams == 1 else f"({self.streams}, samples)"
            raise ValueError(f"samples must have shape {expected}, one row per stream (got {audio.shape})")
        if not np.isfinite(audio).all():
            stream, index = np.argwhere(~np.isfinite(audio))[0]
            self.stats.rejected_chunks += 1
            raise ValueError(f"samples contain NaN or Inf (stream {stream}, sample {index}); the chunk was not "
                             f"used and every stream's state is unchanged")
        return audio

    def accept_waveform(self, samples: object, sample_rate: int = 16000, trace: list | None = None) -> int:
        """Feed one chunk per stream; returns how many frames (hops of the front end: 10 or 80 ms) every stream advanced.

        ``samples``: ``(n,)`` for one stream or ``(streams, n)``, float in
        [-1, 1] or integer PCM, at ``sample_rate`` Hz (resampled to the
        model's rate). A bad chunk raises a ``ValueError`` and leaves the state
        as it was. ``trace``: a list that receives the detector's input of each
        call, posteriors ``(streams, hops, classes)`` and frame energies ``(streams, hops)`` (for evaluation).
        """
        start = time.perf_counter()
        audio = self._as_batch(samples)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz (got {sample_rate})")
        self.stats.clipped_samples += int((np.abs(audio) >= 0.999).sum())
        self.stats.audio_seconds += audio.shape[1] / sample_rate
        self._at_rate(sample_rate)
        first = self._frames_heard
        outputs, spotter = self.pipeline.trace(torch.from_numpy(audio), self.state.pipeline)
        resampled = outputs[0].numpy() if isinstance(self.pipeline[0], Resample) else audio
        scores: SpeechFrames = outputs[-2]
        found: Detections = outputs[-1]
        count = found.keyword.shape[1]
        self.state = KWSState(spotter, self._verified(found, first, resampled))
        if not count:
            return 0
        self.stats.frames += count
        if trace is not None:
            trace.append((scores.values.numpy(), scores.energy.numpy()))
        self.hop_seconds.add((time.perf_counter() - start) / count, count)
        return count

    def _verified(self, found: Detections, first: int, audio: np.ndarray) -> verify.VerifierState | None:
        """Queue the detections of a chunk whose frames start at ``first`` on the shared clock, or hand them and
        the chunk's (resampled) ``audio`` to the verifier and queue those it confirms; the verifier's new state."""
        state = self.state.verifier
        for t, event in detection_events(found, self.labels, self.features):
            if self.verifier is None:
                self._queue(event)
            else:
                heard = (first + t) * self.features.hop + self.features.window_size  # on the shared clock
                state = self.verifier.propose(state, int(heard), *event)
        if self.verifier is None:
            return None
        confirmed, rejected, state = self.verifier.accept(audio, state)
        for c in confirmed:
            self._queue(Event(c.t, c.keyword, c.score, c.stream))
        self.stats.rejected_events += len(rejected)
        return state

    def _queue(self, event: Event) -> None:
        self.stats.events += 1
        if len(self._events) >= MAX_QUEUED_EVENTS:  # nobody polls: keep memory bounded, count what is lost
            self._events.pop(0)
            self.stats.dropped_events += 1
        self._events.append(event)

    # ------------------------------------------------------------ events out
    def poll_events(self) -> list[Event]:
        """The detections since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def top(self, stream: int = 0) -> tuple[str, float]:
        """The label with the highest smoothed posterior on ``stream`` now, and that posterior."""
        smoothed = self.state.pipeline[-1].detector.smoothed[stream]
        k = int(smoothed.argmax())
        return self.labels[k], float(smoothed[k])

    def stream_time(self, stream: int = 0) -> float:
        """Seconds of audio stream ``stream`` has heard since it began or was reset (at the model's rate)."""
        return float(self.state.pipeline[-1].frames[stream]) * self.features.hop / self.features.sample_rate
