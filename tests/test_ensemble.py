import numpy as np
import pytest
import torch
from test_lmuformer import build

import streamlmu
from streamlmu.apps import cli
from streamlmu.audio.features import FbankConfig
from streamlmu.audio.kws import StreamingKWS
from streamlmu.data.speech_commands import labels_for
from streamlmu.models import Ensemble, EnsembleState
from streamlmu.testing import check_stream_op, max_abs_diff, run_step_loop
from streamlmu.audio.bundle import save_checkpoint


def pair(lookahead: int = 0) -> Ensemble:
    """A dim-48 LMUFormer and a narrower Spiking LMUFormer with a shorter memory."""
    return Ensemble([build("tiny", spiking=False, seed=1, lookahead=lookahead),
                     build("tiny", spiking=True, seed=2, lookahead=lookahead, dim=32, order=16)]).eval()


def test_ensemble_logits_are_the_mean_of_its_members():
    ensemble = pair()
    x = torch.randn(2, 30, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        members = [m(x)[0] for m in ensemble.members]
        logits, state = ensemble(x)
    assert torch.equal(logits, (members[0] + members[1]) / 2)
    assert type(state) is EnsembleState and len(state.members) == 2
    assert max_abs_diff(members[0], members[1]) > 1e-2  # two different models


@pytest.mark.parametrize("lookahead", [0, 1])
def test_ensemble_is_a_stream_operator_and_the_engine_runs_it(lookahead):
    ensemble = pair(lookahead)
    x = torch.randn(3, 25, 128, generator=torch.Generator().manual_seed(2))
    check_stream_op(ensemble, x)
    expected, _ = run_step_loop(ensemble, x)
    for blas_min_batch in (None, 1):
        engine, _ = ensemble.streaming(blas_min_batch=blas_min_batch)(x)
        assert max_abs_diff(engine, expected) <= 1e-5
    per_frame, _ = ensemble.streaming(pooling="frame")(x)
    members = [m.streaming(pooling="frame")(x)[0] for m in ensemble.members]
    assert max_abs_diff(per_frame, (members[0] + members[1]) / 2) <= 1e-5
    assert ensemble.streaming().latency_frames == ensemble.latency_frames == 5 * lookahead


def test_ensemble_checkpoint_round_trip(tmp_path):
    ensemble = pair()
    features = FbankConfig()
    save_checkpoint(tmp_path / "e.pt", ensemble, labels_for(35), features)
    loaded = streamlmu.load_model(tmp_path / "e.pt")
    assert type(loaded) is Ensemble and not loaded.training and loaded.labels == labels_for(35)
    assert [type(m) for m in loaded.members] == [type(m) for m in ensemble.members]
    x = torch.randn(2, 20, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], ensemble(x)[0])


def test_ensemble_members_must_agree():
    with pytest.raises(ValueError, match="at least 2 members"):
        Ensemble([build("tiny", spiking=False)])
    with pytest.raises(ValueError, match="agree on classes: member 0 has 35, member 1 has 12"):
        Ensemble([build("tiny", spiking=False), build("tiny", spiking=False, num_classes=12)])
    with pytest.raises(ValueError, match="agree on latency frames"):
        Ensemble([build("tiny", spiking=False), build("tiny", spiking=False, lookahead=1)])
    with pytest.raises(TypeError, match="member 1 is Linear"):
        Ensemble([build("tiny", spiking=False), torch.nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="EnsembleState of 2 members"):
        pair()(torch.randn(1, 3, 128), build("tiny", spiking=False).init_state(1))


def test_ensemble_app_writes_a_checkpoint_that_spots_like_its_members(tmp_path, capsys):
    out = tmp_path / "pair.pt"
    assert cli.main(["ensemble", "lmuformer-tiny-synth12-kws", "lmuformer-tiny-synth12-kws", "--out", str(out)]) == 0
    assert "ensemble of 2 models (499,226 parameters)" in capsys.readouterr().out
    pair_model, single = streamlmu.load_model(out), streamlmu.load_model("lmuformer-tiny-synth12-kws")
    assert pair_model.thresholds is None and pair_model.labels == single.labels  # thresholds need a new calibration
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    scores = []
    for model in (pair_model, single):
        kws = StreamingKWS(model, threshold=0.5)
        trace: list = []
        kws.accept_waveform(audio, 16000, trace=trace)
        scores.append(trace[0][0])
    assert np.abs(scores[0] - scores[1]).max() <= 1e-5  # a model twice is the model


def test_ensemble_app_refuses_members_with_other_labels(tmp_path, capsys):
    out = tmp_path / "bad.pt"
    assert cli.main(["ensemble", "lmuformer-tiny-synth12-kws", "lmuformer-tiny-synth35", "--out", str(out)]) == 2
    assert "lmuformer-tiny-synth35 has other labels than lmuformer-tiny-synth12-kws" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["ensemble", "lmuformer-tiny-synth12-kws", "--out", str(out)]) == 2
    assert "at least 2 members" in capsys.readouterr().err
