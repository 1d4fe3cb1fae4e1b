import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import streamlmu
from streamlmu.apps.cli import main
from streamlmu.audio.features import FbankConfig
from streamlmu.data.speech_commands import SpeechCommands
from streamlmu.metrics import cumulative_macs, macs_per_frame, mean_run_macs
from streamlmu.models.registry import build_model
from streamlmu.train.evaluate import evaluate, streaming_frame_logits
from streamlmu.train.trainer import TrainConfig, train
from streamlmu.train.truncation import (FrameLogits, accuracy_after_onset, accuracy_by_word_fraction,
                                        calibrate_threshold, decide_early, frames_to_hear, pareto_curve,
                                        shortest_prefix)

pytestmark = pytest.mark.filterwarnings("ignore:.*has no training clips")

# One epoch each on the tiny corpus: causal, spiking, look-ahead and the transformer baseline.
RUNS = {
    "causal": dict(model="lmuformer", overrides=dict(dim=16, order=16)),
    "spiking": dict(model="spiking-lmuformer", overrides=dict(dim=16, order=16)),
    "lookahead": dict(model="lmuformer", overrides=dict(dim=16, order=16, lookahead=1)),
    "kwt": dict(model="kwt", overrides=dict(dim=16, depth=1, mlp_dim=32)),
}


@pytest.fixture(scope="module")
def checkpoints(tiny_espeak_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    paths = {}
    for name, kw in RUNS.items():
        out = root / name
        train(TrainConfig(data=str(tiny_espeak_corpus), out=str(out), epochs=1, batch_size=16, tensorboard=False, **kw),
              progress=False)
        paths[name] = out / "best.pt"
    return paths


def odds(posterior: float) -> float:
    """The log-odds threshold of a posterior threshold."""
    return float(np.log(posterior / (1 - posterior)))


def logits_of(rows: list[list[list[float]]], targets: list[int]) -> FrameLogits:
    """A hand-made FrameLogits: ``rows`` (clips, frames, classes)."""
    logits = np.array(rows, np.float32)
    return FrameLogits(tuple("abc"[:logits.shape[2]]), (None,) * len(targets), np.array(targets), logits, 0)


def test_truncation_end_to_end_matches_streaming_evaluate(checkpoints, tiny_espeak_corpus, tmp_path, capsys):
    args = ["truncation", "--data", str(tiny_espeak_corpus), "--out", str(tmp_path), "--grid", "16", "--quiet"]
    for name in RUNS:
        args += ["--model", str(checkpoints[name])]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "truncation.json").read_text())
    assert [r["name"] for r in report["models"]] == list(RUNS)
    assert (tmp_path / "truncation.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "truncation.md").read_text()
    assert table in printed and "| 87 |" in table and "95.17" in table  # the paper's points as reference
    assert "fraction of the word heard" in table  # the synthetic corpus knows each word's span
    testing = SpeechCommands(tiny_espeak_corpus, "testing")
    for name, r in zip(RUNS, report["models"]):
        model = streamlmu.load_model(checkpoints[name])
        streaming = evaluate(model, testing, "streaming", progress=False)
        assert r["clips"] == len(streaming.targets) > 0
        assert r["full_accuracy"] == pytest.approx(streaming.accuracy, abs=1e-12)
        assert len(r["accuracy_by_frames"]) == r["frames"] == 128
        early = r["early_decision"]
        assert 1 <= early["mean_frames"] <= 128 and 0 <= early["accuracy"] <= 1
        assert r["costs"]["macs_per_clip_early"] <= r["costs"]["macs_per_clip_full"]
        assert ("synops_per_frame" in r["costs"]) == (name == "spiking")
        assert r["word_aligned"]["clips"] == r["clips"]
    assert report["models"][2]["latency_frames"] == 5


def test_answers_after_a_frame_ignore_the_audio_after_it(checkpoints):
    features = FbankConfig()
    waves = torch.randn(2, 16000) * 0.1
    cut = 40  # frames heard before the audio changes
    changed = waves.clone()
    changed[:, features.hop * (cut - 1) + features.window_size:] = torch.randn(2, 16000 - 400 - 39 * 160)
    for name in RUNS:
        model = streamlmu.load_model(checkpoints[name])
        a = streaming_frame_logits(model, waves, features)
        b = streaming_frame_logits(model, changed, features)
        assert a.shape == (2, 128, len(model.labels))
        assert torch.equal(a[:, :cut], b[:, :cut])
        if name != "spiking":  # after one epoch its neurons may stay silent on any input
            assert not torch.equal(a[:, cut:], b[:, cut:]), name


def test_the_threshold_comes_from_the_calibration_split_only(checkpoints, tiny_espeak_corpus, tmp_path, capsys):
    def run(data, out):
        assert main(["truncation", "--model", str(checkpoints["causal"]), "--data", str(data), "--out", str(out),
                     "--quiet"]) == 0
        return json.loads((out / "truncation.json").read_text())["models"][0]

    before = run(tiny_espeak_corpus, tmp_path / "a")
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_espeak_corpus, corpus)
    for rel, _ in SpeechCommands(corpus, "testing").items:  # other test audio, same validation audio
        sf.write(corpus / rel, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    after = run(corpus, tmp_path / "b")
    assert after["early_decision"]["threshold"] == before["early_decision"]["threshold"]
    assert after["fixed_prefix"]["frames"] == before["fixed_prefix"]["frames"]
    assert after["accuracy_by_frames"] != before["accuracy_by_frames"]
    assert main(["truncation", "--model", str(checkpoints["causal"]), "--data", str(corpus), "--calibration-split",
                 "testing", "--out", str(tmp_path / "c")]) == 2
    assert "must differ" in capsys.readouterr().err


def test_early_decision_answers_at_the_first_confident_frame():
    # clip 0: confident (class 0, right) at frame 2; clip 1: never confident, right only at the end
    result = logits_of([[[0, 0, 0], [5, 0, 0], [0, 5, 0]],
                        [[1, 0, 0], [0, 1, 0], [0, 0, 1]]], targets=[0, 2])
    decided = decide_early(result, odds(0.9))
    assert decided.frames_used.tolist() == [2, 3] and decided.correct.tolist() == [True, True]
    assert decided.mean_frames == 2.5 and decided.accuracy == 1.0
    assert decide_early(result, odds(0.3)).frames_used.tolist() == [1, 1]  # 1/3 >= 0.3: answer at once
    assert decide_early(result, np.inf).frames_used.tolist() == [3, 3]
    front = pareto_curve(result, [odds(0.3), odds(0.5), odds(0.9), np.inf])
    assert [d.mean_frames for d in front] == sorted(d.mean_frames for d in front)
    assert all(a.accuracy < b.accuracy for a, b in zip(front, front[1:]))


def test_confidence_is_the_log_odds_of_the_top_posterior_and_does_not_saturate():
    result = logits_of([[[0, 0, 0], [5, 0, 0], [60, 0, 0], [80, 0, 0]]], targets=[0])
    confidence = result.confidence()[0]
    assert confidence[:2] == pytest.approx([np.log(0.5), 5 - np.log(2)])
    assert confidence[3] > confidence[2] > 50  # float32 softmax is exactly 1 at both


def test_calibration_picks_the_cheapest_threshold_within_tolerance():
    result = logits_of([[[0, 0, 0], [5, 0, 0], [5, 0, 0]],
                        [[0, 3, 0], [0, 0, 9], [0, 0, 9]]], targets=[0, 2])
    # clip 1 looks like class 1 early: deciding on that confidence costs a point
    chosen = calibrate_threshold(result, tolerance=0.0)
    assert chosen.accuracy == 1.0 and chosen.frames_used.tolist() == [2, 2]
    assert calibrate_threshold(result, tolerance=0.5).mean_frames == 1.0
    assert shortest_prefix(result, tolerance=0.0) == 2
    assert shortest_prefix(result, tolerance=0.5) == 1


def test_word_alignment_counts_frames_from_the_onset():
    features = FbankConfig()
    # frame k (0-based) ends at (160 k + 400) / 16000 s
    assert frames_to_hear(np.array([0.0, 0.0249, 0.025, 0.0351]), features).tolist() == [1, 1, 2, 3]
    logits = np.zeros((2, 128, 2), np.float32)
    logits[0, 10:, 1] = 1.0   # clip 0 right from frame 11
    logits[1, 50:, 1] = 1.0   # clip 1 right from frame 51
    result = FrameLogits(("a", "b"), ("x", "y"), np.array([1, 1]), logits, 0)
    onset = np.array([0.1, 0.5])  # first heard in frames 9 and 49 (0-based 8 and 48)
    accuracy, clips = accuracy_after_onset(result, onset, features, [0, 2, 100])
    assert accuracy[:2].tolist() == [0.0, 1.0] and clips.tolist() == [2, 2, 1]
    half = accuracy_by_word_fraction(result, onset, onset + 0.2, features, [0.0, 0.5])
    assert half.tolist() == [0.0, 1.0]
    assert np.isnan(accuracy_by_word_fraction(result, np.full(2, np.nan), np.full(2, np.nan), features, [0.5])).all()


def test_cumulative_macs_per_model_family():
    lmu = build_model("lmuformer", "tiny")
    assert cumulative_macs(lmu, 4).tolist() == [i * sum(macs_per_frame(lmu).values()) for i in range(5)]
    kwt = build_model("kwt", "tiny")
    assert cumulative_macs(kwt, 98)[-1] == pytest.approx(98 * mean_run_macs(kwt, 98))
