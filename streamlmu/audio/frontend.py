"""Front ends: what turns 16 kHz audio into a keyword model's frames, chosen by name.

Three kinds, each a config (stored in a checkpoint beside the model) and an
exact stream operator:

* ``"fbank"``: the LMUFormer paper's 128-mel Kaldi filterbank, a frame every
  10 ms (:mod:`streamlmu.audio.features`);
* ``"speech-embedding"``: Google's speech embedding, pretrained on real
  speech, 96 values every 80 ms (:mod:`streamlmu.audio.embedding`);
* ``"asr-encoder"``: Moonshine's speech-recognition encoder, pretrained on
  real speech, 832 values per 1 s window every 160 ms (:mod:`streamlmu.audio.asr_encoder`).

All three configs share one clock (:class:`streamlmu.audio.features.FrameClock`):
``sample_rate``, ``hop`` (samples between frames), ``window_size`` (samples a
stream has heard at its first frame), ``frame_shift_ms``, ``frame_end_s(i)``,
``num_frames(samples)``, ``feature_size`` and ``clip_frames`` (the frames of a
1 s clip as a clip model sees it).

Shapes: waves ``(batch, samples)`` float in [-1, 1]; features ``(batch, frames, feature_size)``.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from streamlmu.audio.asr_encoder import AsrEncoderConfig, StreamingAsrEncoder, asr_encoder_features
from streamlmu.audio.embedding import SpeechEmbeddingConfig, StreamingSpeechEmbedding, speech_embedding
from streamlmu.audio.features import FbankConfig, StreamingFbank, fbank, pad_frames
from streamlmu.stream import StreamModule

FrontEndConfig = Union[FbankConfig, SpeechEmbeddingConfig, AsrEncoderConfig]
FEATURE_KINDS = ("fbank", "speech-embedding", "asr-encoder")
_CONFIGS = {"fbank": FbankConfig, "speech-embedding": SpeechEmbeddingConfig, "asr-encoder": AsrEncoderConfig}
_WINDOWED = (SpeechEmbeddingConfig, AsrEncoderConfig)  # front ends whose clips are padded in samples


def frontend_config(kind: str) -> FrontEndConfig:
    """The default config of front end ``kind``."""
    if kind not in _CONFIGS:
        raise ValueError(f"features must be one of {FEATURE_KINDS} (got {kind!r})")
    return _CONFIGS[kind]()


def config_from_dict(values: dict) -> FrontEndConfig:
    """A config from its ``to_dict()`` (a checkpoint's ``features``; older checkpoints without ``kind`` are fbank)."""
    kind = values.get("kind", "fbank")
    if kind not in _CONFIGS:
        raise ValueError(f"unknown front end {kind!r} (known: {', '.join(FEATURE_KINDS)})")
    return _CONFIGS[kind](**values)


def streaming_frontend(cfg: FrontEndConfig, threads: int = 1) -> StreamModule:
    """The stream operator of ``cfg``: ``(audio (B, T), state) -> (frames (B, n, feature_size), state)``."""
    if isinstance(cfg, SpeechEmbeddingConfig):
        return StreamingSpeechEmbedding(cfg, threads)
    if isinstance(cfg, AsrEncoderConfig):
        return StreamingAsrEncoder(cfg, threads)
    return StreamingFbank(cfg)


def signal_features(waves: Tensor, cfg: FrontEndConfig, threads: int = 1) -> Tensor:
    """Frames of whole signals (a stream from its start): ``(batch, samples) -> (batch, frames, feature_size)``."""
    if isinstance(cfg, SpeechEmbeddingConfig):
        return speech_embedding(waves, cfg, threads)
    if isinstance(cfg, AsrEncoderConfig):
        return asr_encoder_features(waves, cfg, threads)
    return fbank(waves, cfg)


def clip_audio(waves: Tensor, cfg: FrontEndConfig) -> Tensor:
    """The audio a clip model hears: the speech embedding's and the ASR encoder's clips are zero-padded (or cut)
    to ``clip_frames`` frames' worth of samples; fbank clips are left as they are (their frames are zero-padded
    instead)."""
    if isinstance(cfg, _WINDOWED):
        size = cfg.clip_samples()
        if waves.shape[-1] >= size:
            return waves[..., :size]
        return torch.nn.functional.pad(waves, (0, size - waves.shape[-1]))
    return waves


def clip_features(waves: Tensor, cfg: FrontEndConfig, threads: int = 1) -> Tensor:
    """Model input of whole clips: ``(batch, samples) -> (batch, clip_frames, feature_size)``."""
    return pad_frames(signal_features(clip_audio(waves, cfg), cfg, threads), cfg.clip_frames)


def frame_hears(cfg: FrontEndConfig, seconds: float) -> bool:
    """Whether one frame of ``cfg`` hears ``seconds`` of audio or more (the ASR encoder's 1 s windows). A keyword
    spotter then scores each frame alone, from the model's initial state, as it learnt from one-frame items."""
    return cfg.window_size / cfg.sample_rate >= seconds
