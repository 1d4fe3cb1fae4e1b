import pickle

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import voiced
from streamlmu.audio import asr_encoder
from streamlmu.audio.asr_encoder import AsrEncoderConfig, StreamingAsrEncoder, asr_encoder_features, model_file
from streamlmu.audio.frontend import clip_features, config_from_dict, streaming_frontend
from streamlmu.testing import check_stream_op

CFG = AsrEncoderConfig()
SHORT = AsrEncoderConfig(window_samples=4000, hop_samples=1000)  # quick windows for the streaming checks


def test_frame_clock():
    assert CFG.hop == 2560 and CFG.window_size == 16000 and CFG.frame_shift_ms == 160.0 and CFG.feature_size == 832
    assert [CFG.num_frames(n) for n in (0, 15999, 16000, 18559, 18560)] == [0, 0, 1, 1, 2]
    assert CFG.frame_end_s(0) == 1.0 and CFG.frame_end_s(1) == pytest.approx(1.16)
    assert CFG.num_frames(CFG.clip_samples()) == CFG.clip_frames == 1
    # a clip is one window: shorter ones are zero-padded, longer ones cut
    assert clip_features(voiced(12000)[None], CFG).shape == (1, 1, 832)
    assert config_from_dict(CFG.to_dict()) == CFG


def test_frames_are_the_shipped_encoders_states_pooled():
    wave = voiced(SHORT.window_size + SHORT.hop, seed=1)
    frames = asr_encoder_features(wave, SHORT)
    session = onnxruntime.InferenceSession(str(model_file()), providers=["CPUExecutionProvider"])
    for i in range(2):
        window = wave[i * SHORT.hop:i * SHORT.hop + SHORT.window_size].numpy()[None]
        hidden = session.run(None, {"input_values": window})[0][0]
        assert hidden.shape == (SHORT.window_size // 384 - 1, 416)
        expected = np.concatenate([hidden.mean(0), hidden.max(0)])
        np.testing.assert_allclose(frames[i].numpy(), expected, atol=1e-4)
    # the encoder hears the signal: another tone gives other frames
    assert (asr_encoder_features(voiced(SHORT.window_size, seed=2, level=0.05), SHORT)[0] - frames[0]).abs().max() > 0.1


@pytest.mark.parametrize("chunk", [1, 999, 4000, 7001])
def test_streaming_equals_offline_for_any_chunking(chunk):
    waves = torch.stack([voiced(9000, seed=s) for s in range(2)])
    whole = asr_encoder_features(waves, SHORT)
    extractor = StreamingAsrEncoder(SHORT)
    state, parts = extractor.init_state(2), []
    for start in range(0, waves.shape[1], chunk):
        out, state = extractor(waves[:, start:start + chunk], state)
        parts.append(out)
    streamed = torch.cat(parts, dim=1)
    assert streamed.shape == whole.shape == (2, SHORT.num_frames(9000), 832)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(asr_encoder_features(waves[1], SHORT), whole[1], atol=1e-5, rtol=0)


def test_stream_contract_state_roundtrip_and_reset():
    extractor = streaming_frontend(SHORT)
    assert isinstance(extractor, StreamingAsrEncoder) and extractor.latency_s == 0.25
    waves = torch.stack([voiced(7000, seed=s) for s in range(2)])
    check_stream_op(extractor, waves, atol=1e-5)
    whole, _ = extractor(waves)
    head, state = extractor(waves[:, :4321])
    tail, _ = extractor(waves[:, 4321:], pickle.loads(pickle.dumps(state)))
    torch.testing.assert_close(torch.cat([head, tail], dim=1), whole, atol=1e-5, rtol=0)
    cleared = extractor.reset(state, torch.tensor([True, False]))
    assert torch.equal(cleared.samples, state.samples) and not cleared.tail[0].any()
    assert torch.equal(cleared.tail[1], state.tail[1])


def test_config_is_checked():
    with pytest.raises(ValueError, match="16 kHz"):
        AsrEncoderConfig(sample_rate=8000)
    with pytest.raises(ValueError, match="at least 768"):
        AsrEncoderConfig(window_samples=500)


def test_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(asr_encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install moonshine-cpp==0.1.4"):
        StreamingAsrEncoder()


def test_spotter_reads_one_encoder_frame_per_window():
    """Each ASR-encoder frame already hears the spotter's whole 1 s window, so the logit window is that one
    frame (as stream-window training reads it), and the spotter runs the same under any chunking."""
    from streamlmu.audio.kws import StreamingKWS
    from streamlmu.data.speech_commands import labels_for
    from streamlmu.models import LMUFormer, LMUFormerConfig
    torch.manual_seed(0)
    model = LMUFormer(LMUFormerConfig.preset("tiny", in_features=832, theta=8.0, num_classes=12)).eval()
    with torch.no_grad():
        model.head.weight *= 30  # confident answers, so that keywords fire
    model.labels, model.features, model.thresholds = labels_for(12), AsrEncoderConfig(), None
    kws = StreamingKWS(model, threshold=0.2, warmup_s=0.0, speech_gate_s=-1)
    assert kws.window_frames == 1
    assert StreamingKWS(model, window_s=1.5).window_frames == round(1.5 / 0.16)
    audio = torch.cat([voiced(16000, seed=s) for s in range(3)]).numpy()
    answers = []
    for chunk in (16000, 2999):
        kws.reset()
        for start in range(0, len(audio), chunk):
            kws.accept_waveform(audio[start:start + chunk], 16000)
        answers.append([(e.keyword, round(e.t, 3)) for e in kws.poll_events()])
    assert answers[0] == answers[1] and answers[0]
    assert all(abs((t - 1.0) / 0.16 - round((t - 1.0) / 0.16)) < 1e-6 for _, t in answers[0])


def test_spotter_scores_each_encoder_frame_alone():
    """A per-window classifier: the spotter's posterior at every frame is the model's on that frame's 1 s window
    as a clip (one frame from the initial state), whatever the frames before it."""
    from streamlmu.audio.kws_pipeline import KeywordScores, SpeechFrontEnd
    from streamlmu.models import LMUFormer, LMUFormerConfig
    torch.manual_seed(0)
    model = LMUFormer(LMUFormerConfig.preset("tiny", in_features=832, theta=8.0, num_classes=12)).eval()
    audio = torch.cat([voiced(16000, seed=s) for s in range(2)])[None]
    frames, _ = SpeechFrontEnd(CFG)(audio)
    scored, _ = KeywordScores(model, 1, fresh_state=True)(frames)
    carried, _ = KeywordScores(model, 1)(frames)
    with torch.no_grad():
        alone = torch.softmax(model(frames.values[0][:, None])[0][:, -1], -1)
    assert frames.values.shape[1] == 7
    torch.testing.assert_close(scored.values[0], alone, atol=1e-5, rtol=0)
    assert (carried.values[0, 1:] - alone[1:]).abs().max() > 1e-3  # carrying the state would score otherwise
