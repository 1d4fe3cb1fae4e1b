"""The keyword spotter as one stream operator: audio samples in, detections out, one state record.

    keyword_pipeline(model) = [Resample] | SpeechFrontEnd | KeywordScores | KeywordDetector

* :class:`SpeechFrontEnd`: samples ``(B, T)`` -> :class:`SpeechFrames` (the model's frames and each
  frame's speech-gate energy);
* :class:`KeywordScores`: the model compiled for the streaming engine (per-frame logits), averaged over a
  sliding window and turned into posteriors;
* :class:`KeywordDetector`: smoothing, thresholds, patience, re-arming, refractory time, warm-up and the
  speech gate of :mod:`streamlmu.audio.detect` -> :class:`Detections`, with each frame's index in its
  stream (the one place a stream's position is kept; ``reset(mask)`` restarts it at 0).

Every stage is rate-changing or follows one (a chunk may complete no frame), so ``step`` takes one sample
and returns the detections of the frames it completed. States are tensors throughout; the Numba kernels
run on copies, so a call never changes the state it was given, unless the caller donates its states
(``keyword_pipeline(..., donate_state=True)``, as :class:`streamlmu.audio.kws.StreamingKWS` does).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu.audio.detect import DetectorConfig, DetectorState, detector_init, detector_run, frame_energy, level_energy
from streamlmu.audio.features import FbankConfig, StreamingLevel
from streamlmu.audio.frontend import FrontEndConfig, streaming_frontend
from streamlmu.audio.resample import Resample
from streamlmu.audio.window import WindowState, window_init, window_posteriors
from streamlmu.engine import DEFAULT_BLAS_MIN_BATCH
from streamlmu.stream import SAMPLES, Frame, Pipeline, State, StreamModule, register_state

register_state(WindowState)
register_state(DetectorState)


class SpeechFrames(NamedTuple):
    """Frames with their speech-gate energy: ``values (B, n, F)`` (features, then posteriors), ``energy (B, n)``."""

    values: Tensor
    energy: Tensor


class Detections(NamedTuple):
    """Per frame: ``keyword (B, n)`` int64 the label index that fired (-1: none), ``score (B, n)`` float32 its
    smoothed posterior, ``frame (B, n)`` int64 the frame's index in its stream since it began or was reset."""

    keyword: Tensor
    score: Tensor
    frame: Tensor


def _arrays(state: State, copy: bool) -> tuple[State, State]:
    """A state of (named) tuples as tensors sharing memory with C-contiguous NumPy arrays, and those arrays:
    copies of its tensors (``copy``) or, where already contiguous, their own memory."""
    if isinstance(state, Tensor):
        view = state.numpy().copy() if copy else np.ascontiguousarray(state.numpy())
        return torch.from_numpy(view), view
    pairs = [_arrays(part, copy) for part in state]
    return type(state)(*(tensor for tensor, _ in pairs)), type(state)(*(view for _, view in pairs))


class _KernelState:
    """The state a Numba kernel updates in place, and its NumPy arrays.

    By default a copy of the state given, so a call never changes it. With ``donated`` the caller hands each
    call's state over and never uses it again: the kernel updates its memory, and the state returned last is
    remembered with its arrays, so the next call converts nothing (about 30 µs a call for the spotter).
    """

    def __init__(self, donated: bool):
        self.donated = donated
        self._last: tuple[State, State] | None = None

    def __call__(self, state: State) -> tuple[State, State]:
        if not self.donated:
            return _arrays(state, copy=True)
        if self._last is None or self._last[0] is not state:
            self._last = _arrays(state, copy=False)
        return self._last


def _torch(state: State) -> State:
    """A state of NumPy arrays in (named) tuples as tensors sharing their memory."""
    if isinstance(state, np.ndarray):
        return torch.from_numpy(state)
    return type(state)(*(_torch(part) for part in state))


class SpeechFrontEnd(StreamModule):
    """``samples (B, T)`` -> :class:`SpeechFrames`: the front end's frames (fbank or speech embedding) and the
    speech gate's energy of each (the fbank frames' mean, or each frame's level on the same clock)."""

    input_frame = SAMPLES
    changes_rate = True
    clock_fields = ("samples",)

    def __init__(self, features: FrontEndConfig, threads: int = 1):
        super().__init__()
        self.features = features
        self.frontend = streaming_frontend(features, threads)
        self.level = None if isinstance(features, FbankConfig) else \
            StreamingLevel(features.window_size, features.hop, features.sample_rate)
        self.output_frame = Frame((features.feature_size,))
        self.latency_samples, self.sample_rate = self.frontend.latency_samples, features.sample_rate

    @property
    def latency_s(self) -> float:  # type: ignore[override]
        return self.frontend.latency_s

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple:
        level = () if self.level is None else self.level.init_state(batch_size, dtype, device)
        return self.frontend.init_state(batch_size, dtype, device), level

    def forward(self, audio: Tensor, state: tuple | None = None) -> tuple[SpeechFrames, tuple]:
        if state is None:
            state = self.init_state(audio.shape[0] if audio.dim() == 2 else 1, audio.dtype, audio.device)
        frames, front = self.frontend(audio, state[0])
        if self.level is None:
            energy, level = frame_energy(frames.numpy()), ()
        else:
            levels, level = self.level(audio, state[1])
            energy = level_energy(levels.numpy())
        return SpeechFrames(frames, torch.from_numpy(energy)), (front, level)


class KeywordScores(StreamModule):
    """:class:`SpeechFrames` of features -> :class:`SpeechFrames` of class posteriors: the model's per-frame
    logits (streaming engine, ``pooling="frame"``) averaged over the last ``window_frames`` frames, softmaxed.

    The model's head is affine, so averaging its per-frame logits over a window equals the head on the
    window's mean features: a 1 s window matches the clips the model learnt from. With ``fresh_state`` every
    frame is scored alone from the model's initial state (a per-window classifier, for a front end whose frame
    hears the whole window); the model's state then carries nothing from frame to frame.
    """

    changes_rate = True  # follows a front end: a chunk may carry no frame

    def __init__(self, model: torch.nn.Module, window_frames: int, blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH,
                 int8_min_batch: int | None = None, donate_state: bool = False, fresh_state: bool = False):
        super().__init__()
        self._window_state, self.fresh_state = _KernelState(donate_state), fresh_state
        if window_frames < 1:
            raise ValueError(f"window_frames must be >= 1 (got {window_frames})")
        self.runner = model.eval().streaming(blas_min_batch=blas_min_batch, pooling="frame",
                                             int8_min_batch=int8_min_batch)
        self.window_frames, self.classes = window_frames, self.runner.output_frame.shape[0]
        self.input_frame, self.output_frame = self.runner.input_frame, self.runner.output_frame

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple:
        return (self.runner.init_state(batch_size, dtype, device),
                _torch(window_init(batch_size, self.window_frames, self.classes)))

    def forward(self, frames: SpeechFrames, state: tuple | None = None) -> tuple[SpeechFrames, tuple]:
        if state is None:
            state = self.init_state(frames.values.shape[0])
        if not frames.values.shape[1]:
            return SpeechFrames(frames.values.new_zeros(frames.values.shape[0], 0, self.classes), frames.energy), state
        if self.fresh_state:  # each frame alone: a batch of one-frame sequences from the initial state
            batch, count = frames.values.shape[:2]
            alone = frames.values.reshape(batch * count, 1, *frames.values.shape[2:])
            logits = self.runner(alone, self.runner.init_state(batch * count))[0].reshape(batch, count, -1)
            engine = state[0]
        else:
            logits, engine = self.runner(frames.values, state[0])
        window, arrays = self._window_state(state[1])
        posteriors = window_posteriors(logits.numpy(), arrays)
        return SpeechFrames(torch.from_numpy(posteriors), frames.energy), (engine, window)


@register_state
class KeywordDetectorState(NamedTuple):
    """The trigger's state (:class:`streamlmu.audio.detect.DetectorState`, as tensors) and ``frames (B,)``
    int64: frames each stream has heard since it began or was reset."""

    detector: DetectorState
    frames: Tensor


class KeywordDetector(StreamModule):
    """:class:`SpeechFrames` of posteriors -> :class:`Detections`, by the rules of :mod:`streamlmu.audio.detect`."""

    output_frame = Frame((), (), "float", "frames")

    def __init__(self, config: DetectorConfig, donate_state: bool = False):
        super().__init__()
        self.config, self._detector_state = config, _KernelState(donate_state)
        self.input_frame = Frame((len(config.thresholds),))

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> KeywordDetectorState:
        return KeywordDetectorState(_torch(detector_init(batch_size, self.config)),
                                    torch.zeros(batch_size, dtype=torch.int64))

    def forward(self, frames: SpeechFrames, state: KeywordDetectorState | None = None
                ) -> tuple[Detections, KeywordDetectorState]:
        batch, count = frames.values.shape[:2]
        state = self.init_state(batch) if state is None else state
        if type(state) is not KeywordDetectorState or state.frames.shape != (batch,):
            raise ValueError(f"state must be the KeywordDetectorState of {batch} streams from "
                             f"KeywordDetector.init_state (got {type(state).__name__})")
        detector, arrays = self._detector_state(state.detector)
        fired, score = detector_run(frames.values.numpy(), frames.energy.numpy(), arrays, self.config)
        index = state.frames[:, None] + torch.arange(count)
        return (Detections(torch.from_numpy(fired), torch.from_numpy(score), index),
                KeywordDetectorState(detector, state.frames + count))


def keyword_pipeline(model: torch.nn.Module, detector: DetectorConfig, window_frames: int,
                     sample_rate: int | None = None, blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH,
                     int8_min_batch: int | None = None, threads: int = 1, donate_state: bool = False,
                     fresh_state: bool = False) -> Pipeline:
    """The spotter of ``model`` (with ``features``) as one operator: ``(B, samples)`` audio at ``sample_rate``
    (default: the model's) -> :class:`Detections` per frame of the model's front end.

    ``donate_state``: the caller hands each call's state over and uses only the state returned (the window's
    and detector's memory is updated in place instead of copied: a snapshot must be saved or cloned).
    ``fresh_state``: score every frame alone (see :class:`KeywordScores`)."""
    features = model.features
    stages: list[StreamModule] = []
    if sample_rate is not None and sample_rate != features.sample_rate:
        stages.append(Resample(sample_rate, features.sample_rate))
    stages += [SpeechFrontEnd(features, threads),
               KeywordScores(model, window_frames, blas_min_batch, int8_min_batch, donate_state, fresh_state),
               KeywordDetector(detector, donate_state)]
    return Pipeline(*stages)
