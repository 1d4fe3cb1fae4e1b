import pickle

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import voiced
from streamlmu.audio import embedding
from streamlmu.audio.embedding import (SpeechEmbeddingConfig, StreamingSpeechEmbedding, embed_mels, log_mel,
                                       model_file, speech_embedding)
from streamlmu.audio.frontend import clip_features

CFG = SpeechEmbeddingConfig()


def _onnx(name: str) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(model_file(name)), providers=["CPUExecutionProvider"])


def test_log_mel_equals_the_shipped_melspectrogram_model():
    """Where the ONNX graph's 80 dB floor (relative to its input's loudest bin) does not bind, the two agree."""
    wave = voiced(16000)
    ours = log_mel(wave.unfold(0, 512, 160))
    ref = _onnx("melspectrogram.onnx").run(None, {"input": (wave.numpy() * 32768)[None]})[0].squeeze() / 10 + 2
    assert ours.shape == ref.shape == (97, 32)
    assert np.abs(ours.numpy() - ref).max() < 1e-4


def test_log_mel_floor_is_fixed_not_relative_to_the_signal():
    silence = torch.zeros(3, 512)
    assert torch.equal(log_mel(silence), torch.full((3, 32), CFG.floor_db / 10 + 2))
    loud = voiced(512, level=0.9)[None]
    quiet_with_loud = torch.cat([torch.zeros(1, 512), loud])
    assert torch.equal(log_mel(quiet_with_loud)[0], log_mel(torch.zeros(1, 512))[0])  # no batch-wide statistic


def test_sequence_model_equals_the_shipped_model_on_every_window():
    gen = torch.Generator().manual_seed(0)
    mels = torch.rand(2, 76 + 8 * 5, 32, generator=gen) * 4 + 2
    seq = embed_mels(mels)
    assert seq.shape == (2, 6, 96)
    windows = np.stack([mels[:, 8 * j:8 * j + 76].numpy() for j in range(6)], 1).reshape(-1, 76, 32, 1)
    ref = _onnx("embedding_model.onnx").run(None, {"input_1": windows})[0].reshape(2, 6, 96)
    assert np.abs(seq.numpy() - ref).max() <= 1e-5 * np.abs(ref).max()


def test_frame_clock():
    assert CFG.hop == 1280 and CFG.window_size == 512 and CFG.frame_shift_ms == 80.0 and CFG.feature_size == 96
    assert [CFG.num_frames(n) for n in (0, 511, 512, 1791, 1792, 16000)] == [0, 0, 1, 1, 2, 13]
    assert CFG.frame_end_s(0) == 0.032 and CFG.frame_end_s(12) == pytest.approx(0.992)
    assert speech_embedding(voiced(16000)).shape == (13, 96)
    assert clip_features(voiced(16000)[None], CFG).shape == (1, CFG.clip_frames, 96)
    assert CFG.num_frames(CFG.clip_samples()) == CFG.clip_frames


@pytest.mark.parametrize("chunk", [1, 37, 1280, 5000])
def test_streaming_equals_offline_for_any_chunking(chunk):
    waves = torch.stack([voiced(12_000, seed=s) for s in range(2)])
    whole = speech_embedding(waves)
    extractor = StreamingSpeechEmbedding()
    state, parts = extractor.init_state(2), []
    for start in range(0, waves.shape[1], chunk):
        out, state = extractor(waves[:, start:start + chunk], state)
        parts.append(out)
    streamed = torch.cat(parts, dim=1)
    assert streamed.shape == whole.shape == (2, CFG.num_frames(12_000), 96)
    assert torch.equal(streamed, whole)
    # a stream that is embedded alone gives the same embeddings as in the batch
    assert torch.equal(speech_embedding(waves[1]), whole[1])


def test_streaming_state_roundtrip_and_reset():
    extractor = StreamingSpeechEmbedding()
    waves = torch.stack([voiced(9000, seed=s) for s in range(2)])
    whole, _ = extractor(waves)
    head, state = extractor(waves[:, :4321])
    tail, _ = extractor(waves[:, 4321:], pickle.loads(pickle.dumps(state)))
    assert torch.equal(torch.cat([head, tail], dim=1), whole)

    cleared = extractor.reset(state, torch.tensor([True, False]))
    fresh = extractor.init_state(2)
    assert torch.equal(cleared.samples, state.samples)
    assert torch.equal(cleared.mels[0], fresh.mels[0]) and torch.equal(cleared.mels[1], state.mels[1])
    rest, _ = extractor(waves[:, 4321:], cleared)
    silent_history = torch.cat([torch.zeros(4321), waves[0, 4321:]])
    assert torch.equal(rest[0], speech_embedding(silent_history)[head.shape[1]:])
    assert torch.equal(rest[1], whole[1, head.shape[1]:])


def test_config_is_checked():
    with pytest.raises(ValueError, match="16 kHz"):
        SpeechEmbeddingConfig(sample_rate=8000)


def test_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(embedding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install openwakeword==0.4.0"):
        StreamingSpeechEmbedding()
