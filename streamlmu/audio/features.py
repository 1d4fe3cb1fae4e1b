"""Kaldi-compatible log-mel filterbank features, offline and as an exact stream operator.

The LMUFormer paper's front end (the AST recipe): ``torchaudio.compliance.kaldi.fbank``
with 128 mel bins, a 25 ms Hanning window every 10 ms, no dither, frames that
fit inside the signal (``snip_edges``), then ``(fbank - mean) / (2 * std)``
with the paper's ``mean = -6.845978`` and ``std = 5.5654526``. Each frame is:
remove its DC offset, pre-emphasis 0.97, window, zero-pad to 512, power
spectrum, mel filterbank (20 Hz to Nyquist), natural log (floored at float
epsilon). The recipe also subtracts the clip's mean sample first; each frame's
DC removal cancels any constant offset, so a causal stream can skip it.

:func:`frame_features` computes that for any batch of frames (the same math as
torchaudio, tested to 1e-4); :func:`fbank` runs it over whole signals;
:class:`StreamingFbank` takes audio in chunks of any size and emits each frame
as soon as its last sample arrives; :class:`HopFbank` takes one hop per step
and emits one frame (a fixed rate, so it exports to ONNX).

Shapes: waveform ``(samples,)`` or ``(batch, samples)``, float, at ``sample_rate``;
features ``(..., frames, num_mel_bins)`` with ``frames = 1 + (samples - 400) // 160``
(none below 400 samples).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import Tensor
from torchaudio.compliance import kaldi

from streamlmu.stream import (SAMPLES, Frame, StreamModule, check_finite, exporting, feature_frame, register_state,
                              step_by_forward)


class FrameClock:
    """The clock a front end's config shares: a frame once ``window_size`` samples are heard, then every ``hop``
    (both properties of the config, with ``sample_rate`` and ``clip_frames`` fields)."""

    def frame_end_s(self, index: int) -> float:
        """When frame ``index`` (from 0) has been heard: its last sample's time in seconds."""
        return (index * self.hop + self.window_size) / self.sample_rate

    def num_frames(self, samples: int) -> int:
        """Frames of a signal of ``samples`` samples (only frames that fit)."""
        return 0 if samples < self.window_size else 1 + (samples - self.window_size) // self.hop

    def clip_samples(self) -> int:
        """Samples that give exactly ``clip_frames`` frames."""
        return (self.clip_frames - 1) * self.hop + self.window_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FbankConfig(FrameClock):
    """Feature parameters; a checkpoint stores them so the model gets the features it was trained on."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0       # 0: Nyquist; negative: that far below Nyquist (Kaldi's convention)
    mean: float = -6.845978      # normalisation (fbank - mean) / (2 * std), the paper's values
    std: float = 5.5654526
    clip_frames: int = 128       # a 1 s clip (98 frames) padded with zeros, as the official input
    kind: str = "fbank"          # the front end's name (streamlmu.audio.frontend)

    def __post_init__(self) -> None:
        if self.kind != "fbank":
            raise ValueError(f"kind must be 'fbank' (got {self.kind!r})")

    @property
    def feature_size(self) -> int:
        """Values per frame (the mel bins)."""
        return self.num_mel_bins

    @property
    def window_size(self) -> int:
        """Samples per frame (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def hop(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()

    def kaldi_kwargs(self) -> dict:
        """The same features as ``torchaudio.compliance.kaldi.fbank`` arguments (the reference)."""
        return dict(sample_frequency=float(self.sample_rate), num_mel_bins=self.num_mel_bins,
                    frame_length=self.frame_length_ms, frame_shift=self.frame_shift_ms, dither=0.0,
                    preemphasis_coefficient=self.preemphasis, low_freq=self.low_freq, high_freq=self.high_freq,
                    window_type="hanning", htk_compat=True, use_energy=False)


class _Tables(NamedTuple):
    window: Tensor  # (window_size,)
    mel: Tensor     # (fft_size // 2 + 1, num_mel_bins)


def _mel_banks(cfg: FbankConfig) -> tuple[Tensor, Tensor]:
    """Kaldi's triangular filters ``(num_mel_bins, fft_size // 2)`` and their centres in Hz ``(num_mel_bins, 1)``."""
    return kaldi.get_mel_banks(cfg.num_mel_bins, cfg.fft_size, float(cfg.sample_rate), cfg.low_freq,
                               cfg.high_freq, 100.0, -500.0, 1.0)  # no VTLN warping


def mel_centres_hz(cfg: FbankConfig) -> Tensor:
    """The centre frequency of each mel bin in Hz: ``(num_mel_bins,)``, equally spaced on the mel scale."""
    return _mel_banks(cfg)[1][:, 0]


@lru_cache(maxsize=None)
def _tables(cfg: FbankConfig, dtype: torch.dtype) -> _Tables:
    bins, _ = _mel_banks(cfg)
    mel = torch.nn.functional.pad(bins, (0, 1)).T.to(dtype).contiguous()  # the Nyquist bin gets no weight
    return _Tables(torch.hann_window(cfg.window_size, periodic=False, dtype=dtype), mel)


@lru_cache(maxsize=None)
def _dft(cfg: FbankConfig) -> Tensor:
    """The real DFT of a zero-padded window as a float64 matrix ``(window_size, 2 * (fft_size // 2 + 1))``: cosines,
    then sines (whose sign a power spectrum drops)."""
    n = torch.arange(cfg.window_size, dtype=torch.int64)[:, None]
    k = torch.arange(cfg.fft_size // 2 + 1, dtype=torch.int64)[None]
    angle = (n * k % cfg.fft_size).double() * (2 * math.pi / cfg.fft_size)
    return torch.cat([angle.cos(), angle.sin()], dim=1)


def frame_features(frames: Tensor, cfg: FbankConfig = FbankConfig(), normalize: bool = True) -> Tensor:
    """Log-mel features of raw frames: ``(..., window_size) -> (..., num_mel_bins)``."""
    if frames.shape[-1] != cfg.window_size:
        raise ValueError(f"frames must have {cfg.window_size} samples in their last dimension "
                         f"(got shape {tuple(frames.shape)})")
    tables = _tables(cfg, frames.dtype)
    x = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([x[..., :1], x[..., :-1]], dim=-1)  # x[j-1], with x[-1] = x[0]
    x = (x - cfg.preemphasis * previous) * tables.window
    if exporting():  # the ONNX exporter writes no rfft: the same transform as one product with the DFT's terms,
        bins = cfg.fft_size // 2 + 1  # in float64, which keeps it as close to the FFT as the FFT is to exact
        parts = x.double() @ _dft(cfg)
        power = (parts[..., :bins].square() + parts[..., bins:].square()).to(x.dtype)
    else:
        spectrum = torch.fft.rfft(x, n=cfg.fft_size)
        power = spectrum.real.square() + spectrum.imag.square()  # |X|^2 without a sqrt (4x faster than a sum over 2)
    energies = power @ tables.mel
    logs = energies.clamp(min=torch.finfo(frames.dtype).eps).log()
    return (logs - cfg.mean) / (2 * cfg.std) if normalize else logs


def check_waveform(waveform: Tensor) -> None:
    """What every whole-signal front end checks: ``(samples,)`` or ``(batch, samples)``, float, finite."""
    if waveform.dim() not in (1, 2):
        raise ValueError(f"waveform must have shape (samples,) or (batch, samples) (got {tuple(waveform.shape)})")
    if not waveform.is_floating_point():
        raise TypeError(f"waveform must be float samples in [-1, 1] (got {waveform.dtype})")
    check_finite(waveform, "waveform")


def fbank(waveform: Tensor, cfg: FbankConfig = FbankConfig(), normalize: bool = True) -> Tensor:
    """Features of whole signals: ``(samples,)`` or ``(batch, samples)`` -> ``(..., frames, num_mel_bins)``."""
    check_waveform(waveform)
    count = cfg.num_frames(waveform.shape[-1])
    if count == 0 or waveform.numel() == 0:  # too short, or an empty batch
        return waveform.new_zeros(*waveform.shape[:-1], count, cfg.num_mel_bins)
    frames = waveform[..., :cfg.window_size + (count - 1) * cfg.hop].unfold(-1, cfg.window_size, cfg.hop)
    return frame_features(frames, cfg, normalize)


def pad_frames(features: Tensor, frames: int) -> Tensor:
    """Zero-pad or crop ``(..., T, F)`` to ``frames`` frames (the official fixed-length input)."""
    time = features.shape[-2]
    if time >= frames:
        return features[..., :frames, :]
    return torch.nn.functional.pad(features, (0, 0, 0, frames - time))


def complete_frames(tail: Tensor, before: int, audio: Tensor, window: int, hop: int) -> tuple[Tensor, Tensor]:
    """The frames a chunk completes, and the stream's new tail.

    ``tail (B, window)`` holds the stream's last samples (zeros before its
    start), ``before`` is how many samples it had consumed, ``audio (B, T)``
    is the chunk. Frame ``k`` covers samples ``[k hop, k hop + window)``.
    Returns ``frames (B, n, window)``, those whose last sample is in the
    chunk, and the last ``window`` samples heard.
    """
    count = (lambda samples: 0 if samples < window else 1 + (samples - window) // hop)
    first, end = count(before), count(before + audio.shape[1])
    seq = torch.cat([tail, audio], dim=1)               # seq[:, i] is sample before - window + i
    if end == first:
        return audio.new_zeros(audio.shape[0], 0, window), seq[:, -window:]
    start = first * hop - before + window               # index in seq of frame `first`'s first sample
    span = seq[:, start:start + window + (end - first - 1) * hop]
    return span.unfold(1, window, hop), seq[:, -window:]


def check_chunk(audio: Tensor, state: object, state_type: type, operator: type, **shapes: tuple[int, ...]) -> None:
    """What every audio stream operator checks of a chunk and its state: ``audio (batch, samples)`` float and
    finite; ``state`` a ``state_type`` (from ``operator.init_state``) whose fields have ``shapes``, its ``tail``
    of the audio's dtype and its streams' sample clocks in step."""
    if audio.dim() != 2:
        raise ValueError(f"audio must have shape (batch, samples) (got {tuple(audio.shape)})")
    if not audio.is_floating_point():
        raise TypeError(f"audio must be float samples in [-1, 1] (got {audio.dtype})")
    check_finite(audio, "audio")
    if type(state) is not state_type:
        raise TypeError(f"state must be a {state_type.__name__} from {operator.__name__}.init_state "
                        f"(got {type(state).__name__})")
    if any(tuple(getattr(state, name).shape) != shape for name, shape in shapes.items()):
        raise ValueError(f"state does not belong to a batch of {audio.shape[0]} streams: expected "
                         + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
    if state.tail.dtype != audio.dtype:
        raise TypeError(f"state.tail must match the audio's dtype {audio.dtype} (got {state.tail.dtype})")
    if audio.shape[0] and bool((state.samples != state.samples[0]).any()):
        raise ValueError("the streams of a batch must have consumed the same number of samples")


@register_state
class FbankState(NamedTuple):
    """Audio a stream still needs: ``tail (B, window_size)`` the last samples (zeros before the start), and
    ``samples (B,)`` int64, the samples consumed; streams of one batch move in step."""

    tail: Tensor
    samples: Tensor


class AudioFrames(StreamModule):
    """Base of the operators that turn audio samples into frames on a hop: ``(batch, samples)`` float in
    [-1, 1] in, a frame out once a window is full and every ``hop`` samples after (``changes_rate``).

    The streams of a batch share their sample clock, the state's ``samples`` field, which ``reset(state,
    mask)`` keeps: it silences the masked streams' history (zeros, as before a stream's start), so their
    next frames start cleanly once a full window of new audio has arrived. ``step`` takes one sample
    ``(batch,)`` and returns the ``(batch, n, *frame)`` frames it completed (``n`` 0 or 1).
    ``latency_samples``: how long a sample may wait for the first frame that hears it (one window).
    """

    input_frame = SAMPLES
    changes_rate = True
    clock_fields = ("samples",)
    latency_samples: int = 0
    sample_rate: int | None = None

    @property
    def latency_s(self) -> float | None:  # type: ignore[override]
        return None if self.sample_rate is None else self.latency_samples / self.sample_rate


class StreamingFbank(AudioFrames):
    """Log-mel frames from audio chunks of any size, equal to :func:`fbank` on the whole signal.

    ``forward(audio (B, T), state) -> (features (B, n, num_mel_bins), state)``, where
    ``n`` is how many frames were completed by these samples (often 0 or 1 for a
    10 ms chunk). A frame is emitted with its last sample: the latency is one
    window (25 ms), reported as ``latency_samples`` and ``latency_s``. Clock,
    ``reset`` and ``step``: see :class:`AudioFrames`.

    >>> extractor = StreamingFbank()
    >>> state = extractor.init_state(batch_size=1)
    >>> frames, state = extractor(torch.zeros(1, 400), state)
    >>> tuple(frames.shape)
    (1, 1, 128)
    """

    def __init__(self, config: FbankConfig | None = None, normalize: bool = True):
        super().__init__()
        self.config = config or FbankConfig()
        self.normalize = normalize
        self.latency_samples = self.config.window_size
        self.sample_rate = self.config.sample_rate
        self.output_frame = feature_frame(self.config.num_mel_bins)

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> FbankState:
        return FbankState(torch.zeros(batch_size, self.config.window_size, dtype=dtype, device=device),
                          torch.zeros(batch_size, dtype=torch.int64, device=device))

    def forward(self, audio: Tensor, state: FbankState | None = None) -> tuple[Tensor, FbankState]:
        cfg = self.config
        if state is None:
            state = self.init_state(audio.shape[0] if audio.dim() == 2 else 1, audio.dtype, audio.device)
        batch = audio.shape[0] if audio.dim() == 2 else 1
        check_chunk(audio, state, FbankState, StreamingFbank, tail=(batch, cfg.window_size), samples=(batch,))
        before = int(state.samples[0]) if audio.shape[0] else 0
        frames, tail = complete_frames(state.tail, before, audio, cfg.window_size, cfg.hop)
        new = FbankState(tail, state.samples + audio.shape[1])
        if frames.shape[1] == 0:
            return audio.new_zeros(audio.shape[0], 0, cfg.num_mel_bins), new
        return frame_features(frames, cfg, self.normalize), new


class StreamingLevel(AudioFrames):
    """The level of each frame of a front end's clock, for a speech gate: ``(audio (B, T), state) -> (level (B, n),
    state)`` in dB relative to full scale (10 log10 of the mean square, floored at -120 dB), frame ``k`` over
    samples ``[k hop, k hop + window_size)``; exact under any chunking, like :class:`StreamingFbank`."""

    output_frame = Frame((), (), "float", "frames")

    def __init__(self, window_size: int, hop: int, sample_rate: int | None = None):
        super().__init__()
        if window_size < 1 or hop < 1:
            raise ValueError(f"window_size and hop must be >= 1 samples (got {window_size}, {hop})")
        self.window_size, self.hop = window_size, hop
        self.latency_samples, self.sample_rate = window_size, sample_rate

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> FbankState:
        return FbankState(torch.zeros(batch_size, self.window_size, dtype=dtype, device=device),
                          torch.zeros(batch_size, dtype=torch.int64, device=device))

    def forward(self, audio: Tensor, state: FbankState | None = None) -> tuple[Tensor, FbankState]:
        if state is None:
            state = self.init_state(audio.shape[0] if audio.dim() == 2 else 1, audio.dtype, audio.device)
        batch = audio.shape[0] if audio.dim() == 2 else 1
        check_chunk(audio, state, FbankState, StreamingLevel, tail=(batch, self.window_size), samples=(batch,))
        before = int(state.samples[0]) if audio.shape[0] else 0
        frames, tail = complete_frames(state.tail, before, audio, self.window_size, self.hop)
        level = 10.0 * torch.log10(frames.double().square().mean(-1).clamp(min=1e-12))
        return level.to(audio.dtype), FbankState(tail, state.samples + audio.shape[1])


@register_state
class HopFbankState(NamedTuple):
    """``tail (B, lead)``: the samples before the current hop that its frame still needs (zeros before the start)."""

    tail: Tensor


class HopFbank(StreamModule):
    """:class:`StreamingFbank` at a fixed rate, one hop of samples per step: ``(B, hop) -> (B, num_mel_bins)``
    (``forward``: ``(B, T, hop) -> (B, T, num_mel_bins)``), so it exports to ONNX (:func:`streamlmu.export.to_onnx`).

    Each step emits the frame that ends inside its hop. Before a full window has been heard that frame reaches
    back before the stream's start, over zeros: the output is exactly :class:`StreamingFbank`'s on the stream
    with ``lead = hop * (ceil(window / hop) - 1)`` zero samples before it (320, 20 ms, at the defaults), and from
    step ``warmup_steps = ceil(window / hop) - 1`` on, frame ``t`` is StreamingFbank's frame ``t - warmup_steps``
    on the stream itself. A frame waits ``window - lead`` samples of its hop at most (80 at the defaults).
    """

    def __init__(self, config: FbankConfig | None = None, normalize: bool = True):
        super().__init__()
        self.config = cfg = config or FbankConfig()
        self.normalize = normalize
        self.warmup_steps = -(-cfg.window_size // cfg.hop) - 1
        self.lead = cfg.hop * self.warmup_steps
        self.input_frame = Frame((cfg.hop,), ("samples",), "float", "hops")
        self.output_frame = feature_frame(cfg.num_mel_bins)

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> HopFbankState:
        return HopFbankState(torch.zeros(batch_size, self.lead, dtype=dtype, device=device))

    def forward(self, x: Tensor, state: HopFbankState | None = None) -> tuple[Tensor, HopFbankState]:
        cfg = self.config
        self.input_frame.check(x)
        check_finite(x)
        batch, time = x.shape[0], x.shape[1]
        state = self.init_state(batch, x.dtype, x.device) if state is None else state
        if type(state) is not HopFbankState or tuple(state.tail.shape) != (batch, self.lead):
            raise ValueError(f"state must be a HopFbankState from HopFbank.init_state({batch}) "
                             f"(tail of shape ({batch}, {self.lead}))")
        seq = torch.cat([state.tail.to(x.dtype), x.reshape(batch, time * cfg.hop)], dim=1)
        frames = torch.stack([seq[:, t * cfg.hop:t * cfg.hop + cfg.window_size] for t in range(time)], dim=1) \
            if time else x.new_zeros(batch, 0, cfg.window_size)  # slices, not unfold: unfold does not export
        return frame_features(frames, cfg, self.normalize), HopFbankState(seq[:, seq.shape[1] - self.lead:])

    def step(self, x: Tensor, state: HopFbankState) -> tuple[Tensor, HopFbankState]:
        return step_by_forward(self, x, state)
