import pickle
import re

import pytest
import torch
from torchaudio.compliance import kaldi

from streamlmu.audio.asr_encoder import AsrEncoderConfig, StreamingAsrEncoder
from streamlmu.audio.augment import freq_warp, mixup, spec_augment
from streamlmu.audio.embedding import StreamingSpeechEmbedding
from streamlmu.audio.features import FbankConfig, StreamingFbank, fbank, pad_frames

CFG = FbankConfig()


def speechlike(samples: int, seed: int = 0) -> torch.Tensor:
    """A chirp with harmonics and noise, amplitude about 0.3."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 120 + 80 * torch.sin(2 * torch.pi * 1.3 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(k * phase) / k for k in range(1, 6))
    return 0.1 * voiced + 0.02 * torch.randn(samples, generator=gen)


def test_offline_features_equal_torchaudio_kaldi_fbank():
    wave = speechlike(16000)
    ref = kaldi.fbank(wave[None], **CFG.kaldi_kwargs())
    ours = fbank(wave, CFG, normalize=False)
    assert ours.shape == (98, 128) == ref.shape  # 1 s -> 98 frames, as in the paper
    assert (ours - ref).abs().max() <= 1e-4
    normalized = fbank(wave, CFG)
    assert torch.allclose(normalized, (ref + 6.845978) / (2 * 5.5654526), atol=1e-5)


def test_clip_mean_removal_of_the_recipe_changes_nothing():
    """The official recipe subtracts the clip mean first; per-frame DC removal makes that a no-op."""
    wave = speechlike(16000) + 0.05
    ref = kaldi.fbank((wave - wave.mean())[None], **CFG.kaldi_kwargs())
    # float32 rounding of the shifted samples, relative to log-mel values up to about 15 (1.1e-4 seen on one CPU)
    torch.testing.assert_close(fbank(wave, CFG, normalize=False), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 37, 160, 1000])
def test_streaming_features_equal_offline_for_any_chunk_size(chunk):
    wave = speechlike(12_345, seed=1)
    extractor = StreamingFbank(normalize=False)
    state = extractor.init_state(1)
    frames = []
    for start in range(0, wave.shape[0], chunk):
        out, state = extractor(wave[None, start:start + chunk], state)
        frames.append(out)
    streamed = torch.cat(frames, dim=1)[0]
    ref = kaldi.fbank(wave[None], **CFG.kaldi_kwargs())
    assert streamed.shape == ref.shape == (CFG.num_frames(12_345), 128)
    assert (streamed - ref).abs().max() <= 1e-4


def test_streaming_batch_state_roundtrip_and_reset():
    extractor = StreamingFbank()
    waves = torch.stack([speechlike(3000, seed=s) for s in range(2)])
    whole, _ = extractor(waves)
    assert torch.allclose(whole, fbank(waves), atol=1e-5)
    head, state = extractor(waves[:, :1234])
    state = pickle.loads(pickle.dumps(state))
    tail, _ = extractor(waves[:, 1234:], state)
    assert torch.equal(torch.cat([head, tail], dim=1), whole)

    # reset silences stream 0's history; its frames after a full new window equal a fresh run
    cleared = extractor.reset(state, torch.tensor([True, False]))
    assert torch.equal(cleared.samples, state.samples) and not cleared.tail[0].any()
    assert torch.equal(cleared.tail[1], state.tail[1])
    rest, _ = extractor(waves[:, 1234:], cleared)
    zero_history = torch.cat([torch.zeros(1234), waves[0, 1234:]])
    assert torch.allclose(rest[0], fbank(zero_history)[head.shape[1]:], atol=1e-5)


AUDIO_OPERATORS = {"fbank": StreamingFbank, "speech-embedding": StreamingSpeechEmbedding,
                   "asr-encoder": lambda: StreamingAsrEncoder(AsrEncoderConfig(window_samples=2000, hop_samples=700))}


@pytest.mark.parametrize("kind", AUDIO_OPERATORS)
@pytest.mark.parametrize("bad, error, words", [
    (torch.zeros(512), ValueError, r"\(batch, samples\)"),
    (torch.zeros(1, 512, dtype=torch.int16), TypeError, "float"),
    (torch.full((1, 512), float("nan")), ValueError, "NaN or Inf"),
    (torch.full((1, 512), float("inf")), ValueError, "NaN or Inf"),
])
def test_streaming_bad_input(kind, bad, error, words):
    extractor = AUDIO_OPERATORS[kind]()
    state = extractor.init_state(1)
    with pytest.raises(error, match=words):
        extractor(bad, state)
    with pytest.raises(ValueError, match="batch of 2 streams"):
        extractor(torch.zeros(2, 100), extractor.init_state(3))


def test_streams_out_of_step_are_refused():
    extractor = StreamingFbank()
    state = extractor.init_state(2)
    state = state._replace(samples=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="same number of samples"):
        extractor(torch.zeros(2, 10), state)


def test_pad_frames_to_the_official_length():
    x = torch.ones(2, 98, 128)
    padded = pad_frames(x, 128)
    assert padded.shape == (2, 128, 128) and padded[:, 98:].abs().sum() == 0
    assert pad_frames(torch.ones(2, 130, 128), 128).shape == (2, 128, 128)


def test_spec_augment_masks_bands_deterministically():
    x = torch.ones(4, 100, 128)
    a = spec_augment(x, torch.Generator().manual_seed(0), freq_width=30, time_width=20)
    b = spec_augment(x, torch.Generator().manual_seed(0), freq_width=30, time_width=20)
    assert torch.equal(a, b)
    zero = a == 0
    assert zero.any() and not zero.all()
    # a masked mel bin is masked at every frame, a masked frame at every bin
    for i in range(4):
        masked_bins = zero[i].all(dim=0)
        masked_frames = zero[i].all(dim=1)
        assert torch.equal(zero[i], masked_bins[None, :] | masked_frames[:, None])
        assert masked_bins.sum() <= 2 * 30 and masked_frames.sum() <= 2 * 20


def test_mixup_blends_features_and_targets_alike():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(4.0)[:, None, None].expand(4, 3, 2).clone()
    y = torch.eye(4)
    xm, ym = mixup(x, y, alpha=0.5, generator=gen)
    assert torch.allclose(ym.sum(dim=1), torch.ones(4))
    # each mixed example's value equals the label-weighted mean of the originals
    assert torch.allclose(xm[:, 0, 0], ym @ torch.arange(4.0), atol=1e-6)
    assert mixup(x, y, alpha=0.0, generator=gen) == (x, y)


def _tone_peak_bins(hz: torch.Tensor) -> torch.Tensor:
    """The loudest mel bin of a 1 s tone at each frequency, in frame 50."""
    t = torch.arange(16000) / 16000
    return fbank(torch.sin(2 * torch.pi * hz[:, None] * t), FbankConfig())[:, 50].argmax(dim=-1)


def test_freq_warp_moves_a_tone_like_a_higher_or_lower_voice():
    cfg = FbankConfig()
    x = fbank(torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000).expand(32, -1), cfg)
    warped = freq_warp(x, torch.Generator().manual_seed(0), cfg, max_warp=0.2)
    assert torch.equal(warped, freq_warp(x, torch.Generator().manual_seed(0), cfg, max_warp=0.2))
    peaks = warped[:, 50].argmax(dim=-1)
    low, high = _tone_peak_bins(torch.tensor([800.0, 1200.0]))
    assert low < _tone_peak_bins(torch.tensor([1000.0]))[0] < high
    assert ((peaks >= low) & (peaks <= high)).all() and len(peaks.unique()) > 5
    # a flat spectrum stays flat; no warp returns the input and draws nothing
    flat = torch.full((2, 5, 128), 0.3)
    assert torch.allclose(freq_warp(flat, torch.Generator().manual_seed(1), cfg), flat)
    gen = torch.Generator().manual_seed(2)
    assert freq_warp(x, gen, cfg, max_warp=0.0) is x
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(2).get_state())


@pytest.mark.parametrize("shape, max_warp, words", [((2, 5, 64), 0.1, "mel=128"), ((2, 5, 128), 1.0, "[0, 1)")])
def test_freq_warp_bad_input(shape, max_warp, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        freq_warp(torch.zeros(shape), torch.Generator(), FbankConfig(), max_warp)


def test_hop_fbank_is_streaming_fbank_one_hop_per_step_after_its_lead():
    """HopFbank's frames equal StreamingFbank's on the stream after ``lead`` zero samples; from step
    ``warmup_steps`` on, StreamingFbank's own frames; and it keeps the stream-operator contract."""
    from streamlmu.audio.features import HopFbank
    from streamlmu.testing import check_stream_op
    op = HopFbank()
    assert (op.lead, op.warmup_steps) == (320, 2)
    hops = 0.1 * torch.randn(3, 60, 160, generator=torch.Generator().manual_seed(4))
    frames, _ = op(hops)
    led, _ = StreamingFbank()(torch.cat([torch.zeros(3, op.lead), hops.reshape(3, -1)], dim=1))
    own, _ = StreamingFbank()(hops.reshape(3, -1))
    assert torch.equal(frames, led[:, :60])
    assert torch.equal(frames[:, op.warmup_steps:], own[:, :60 - op.warmup_steps])
    assert max(check_stream_op(op, hops).values()) == 0.0
    with pytest.raises(ValueError, match=r"\(batch, hops, samples=160\)"):
        op(torch.zeros(1, 2, 100))
