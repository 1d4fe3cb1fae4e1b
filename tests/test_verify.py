import json

import numpy as np
import pytest
import torch

from streamlmu.audio.features import FbankConfig
from streamlmu.audio.frontend import clip_features
from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.kws_eval import replay, run_streams
from streamlmu.audio.verify import RecordedVerifier, Verifier
from streamlmu.pretrained import DEFAULT_KWS_MODEL

CLIP_MODEL = "lmuformer-tiny-synth35"


class RecordingClassifier(torch.nn.Module):
    """A stand-in clip model: keeps every input it is given and answers with fixed logits."""

    def __init__(self, labels=("yes", "no", "dog"), logits=(0.0, 0.0, 0.0)):
        super().__init__()
        self.labels, self.features, self.logits, self.inputs = labels, FbankConfig(), torch.tensor(logits), []

    def classify(self, x):
        self.inputs.append(x)
        return self.logits.expand(x.shape[0], -1)


def _events(kws, audio, rate, chunk):
    kws.reset()
    for start in range(0, len(audio), chunk):
        kws.accept_waveform(audio[start:start + chunk], rate)
    return [(e.keyword, round(e.t, 3), e.score) for e in kws.poll_events()]


def test_the_verifier_classifies_the_second_that_ends_a_delay_after_the_detection():
    model = RecordingClassifier()
    verifier = Verifier(model, keywords=("yes", "no"), delay_s=0.25, threshold=0.3)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 48000)).astype(np.float32)
    _, _, state = verifier.accept(audio[:, :16000], verifier.init_state(2))
    state = verifier.propose(state, 20000, 1.25, "yes", 0.9, 1)     # its window ends at sample 24000
    confirmed, rejected, state = verifier.accept(audio[:, 16000:23999], state)  # one sample short
    assert confirmed == rejected == []
    proposed = state
    (confirmed,), rejected, state = verifier.accept(audio[:, 23999:30000], state)
    assert confirmed.t == pytest.approx(1.5) and (confirmed.keyword, confirmed.stream) == ("yes", 1) and not rejected
    expected = clip_features(torch.from_numpy(audio[1:, 8000:24000].copy()), model.features)
    assert torch.equal(model.inputs[-1], expected)
    assert verifier.accept(audio[:, 23999:30000], proposed)[0] == [confirmed]  # the state it was given is as it was
    assert verifier.accept(audio[:, 30000:], state)[:2] == ([], [])


def test_a_chunk_longer_than_the_window_is_checked_piece_by_piece():
    model = RecordingClassifier()
    verifier = Verifier(model, keywords=("yes",), delay_s=0.0, threshold=0.3)
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 80000)).astype(np.float32)
    _, _, state = verifier.accept(audio[:, :100], verifier.init_state(1))
    state = verifier.propose(state, 20000, 1.25, "yes", 0.9, 0)
    state = verifier.propose(state, 70000, 4.375, "yes", 0.9, 0)
    assert state.waiting.shape[1] == 2
    assert [c.end for c in verifier.accept(audio[:, 100:], state)[0]] == [20000, 70000]
    for window, end in zip(model.inputs, (20000, 70000)):
        assert torch.equal(window, clip_features(torch.from_numpy(audio[:, end - 16000:end].copy()), model.features))


def test_a_stream_reset_drops_its_waiting_detections_and_its_past():
    model = RecordingClassifier(logits=(5.0, 0.0, 0.0))   # says "yes"
    verifier = Verifier(model, keywords=("yes", "no"), delay_s=0.2, threshold=0.5)
    audio = np.full((2, 16000), 0.3, np.float32)
    _, _, state = verifier.accept(audio, verifier.init_state(2))
    state = verifier.propose(state, 16000, 1.0, "yes", 0.9, 0)
    state = verifier.propose(state, 16000, 1.0, "no", 0.9, 1)       # "no" gets a posterior of 0.01: rejected
    state = verifier.reset(state, torch.tensor([True, False]))
    confirmed, (rejected,), state = verifier.accept(audio[:, :3200], state)
    assert confirmed == [] and (rejected.keyword, rejected.stream) == ("no", 1)
    state = verifier.propose(state, 16000 + 3200, 0.2, "yes", 0.9, 0)  # 0.2 s into the restarted stream
    (confirmed,), _, _ = verifier.accept(audio[:, :3200], state)
    assert confirmed.t == pytest.approx(0.4)
    window = np.zeros((1, 16000), np.float32)
    window[:, -6400:] = 0.3                           # nothing before the reset is heard
    assert torch.equal(model.inputs[-1], clip_features(torch.from_numpy(window), model.features))


def test_a_verifier_must_know_the_keywords_and_take_the_spotters_rate():
    with pytest.raises(ValueError, match="must know every keyword; it lacks left"):
        Verifier(RecordingClassifier(), ("yes", "left"))
    with pytest.raises(ValueError, match=r"delay_s must be in \[0, 1\]"):
        Verifier(RecordingClassifier(), ("yes",), delay_s=2.0)
    slow = RecordingClassifier(labels=("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"),
                               logits=(0.0,) * 10)
    slow.features = FbankConfig(sample_rate=8000)
    with pytest.raises(ValueError, match="must take 16000 Hz audio"):
        StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL, verifier=slow)


def test_verified_events_are_the_spotters_a_delay_later_and_rejections_are_counted(demo):
    audio, rate, truth = demo
    options = dict(keywords=tuple(truth["keywords"]), threshold=0.2)  # a low threshold: weak detections too
    spotted = _events(StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL, **options), audio, rate, 1600)
    kws = StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL, verifier=CLIP_MODEL, verify_delay_s=0.3, **options)
    verified = _events(kws, audio, rate, 1600)
    print("spotted", spotted, "verified", verified)
    shifted = [(k, round(t + 0.3, 3), s) for k, t, s in spotted]
    assert set(verified) <= set(shifted) and kws.stats.rejected_events == len(spotted) - len(verified) > 0
    spoken = {w["word"] for w in truth["words"]}
    assert {k for k, _, _ in verified} <= spoken
    assert [e[:2] for e in _events(kws, audio, rate, 37)] == [e[:2] for e in verified]


def test_the_recorded_verifier_keeps_the_events_the_live_one_confirms(demo):
    audio, rate, truth = demo
    assert rate == 16000
    streams = np.stack([audio, audio[::-1].copy()])  # backwards: only false detections, most of them rejected
    options = dict(keywords=tuple(truth["keywords"]), threshold=0.3, streams=2)
    kws = StreamingKWS.from_pretrained(DEFAULT_KWS_MODEL, verifier=CLIP_MODEL, verify_delay_s=0.3, **options)
    live, posteriors, energy = run_streams(kws, streams)
    spotted = replay(posteriors, energy, kws.detector, kws.labels, kws.features)
    recorded = RecordedVerifier(kws.verifier.model, streams, delay_s=0.3, threshold=kws.verifier.threshold)
    kept = recorded(spotted)
    assert sum(map(len, spotted)) - sum(map(len, kept)) == kws.stats.rejected_events > 0
    assert [[(e.keyword, round(e.t, 4)) for e in s] for s in kept] == \
        [[(e.keyword, round(e.t, 4)) for e in s] for s in live]
    assert recorded(spotted) == kept  # a second call classifies nothing anew and answers the same


def test_listen_takes_a_verifier(capsys):
    from streamlmu.apps.cli import main
    assert main(["listen", "demo", "--verifier", CLIP_MODEL, "--verify-delay", "0.25"]) == 0
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines()]
    assert events and "rejected by the verifier" in err
    assert main(["listen", "demo", "--verifier", CLIP_MODEL, "--verify-threshold", "2", "--quiet"]) == 2
    assert "threshold a posterior in [0, 1]" in capsys.readouterr().err
