import json
from pathlib import Path

import numpy as np
import pytest

import streamlmu
from streamlmu.data.speech_commands import WORDS_35, SpeechCommands, labels_for
from streamlmu.pretrained import FOLDER, available, pretrained_path
from streamlmu.train.evaluate import evaluate

BUNDLED = "lmuformer-tiny-synth35"
TRUNCATION_REPORT = Path(__file__).parents[1] / "bench" / "results" / "truncation"


def card_figures() -> dict:
    """The measured figures the model card states, kept beside it as JSON."""
    return json.loads((FOLDER / "model_card.json").read_text())


def test_bundled_models_are_small_and_load_by_name():
    assert BUNDLED in available()
    for name in available():
        assert pretrained_path(name).stat().st_size <= 10 * 2 ** 20
        model = streamlmu.load_model(name)
        assert model.labels in (labels_for(35), labels_for(12)) and not model.training
        assert name in card_figures()
    assert BUNDLED in (FOLDER / "MODEL_CARD.md").read_text()


@pytest.fixture(scope="module")
def synthetic_test_split(tmp_path_factory):
    """The test split of the espeak-ng corpus the bundled models were trained on, regenerated (about 1 min)."""
    from streamlmu.data.synth import SynthConfig, generate
    root = generate(tmp_path_factory.mktemp("scv2"), SynthConfig(recipe="espeak"), WORDS_35, workers=2,
                    progress=False)
    return SpeechCommands(root, "testing")


def test_bundled_spotter_reproduces_its_card_on_the_synthetic_test_split(synthetic_test_split, tmp_path, capsys):
    """The live-spotting figures of the card (about a minute: the corpus, then 40 min of test streams)."""
    from streamlmu.apps.cli import main
    from streamlmu.pretrained import DEFAULT_KWS_MODEL
    card = card_figures()[DEFAULT_KWS_MODEL]
    out = tmp_path / "kws.json"
    assert main(["kws-eval", "--data", str(synthetic_test_split.root), "--minutes", str(card["kws_eval"]["minutes"]),
                 "--streams", str(card["kws_eval"]["streams"]), "--plot", "", "--json", str(out), "--quiet"]) == 0
    measured = json.loads(out.read_text())
    assert measured["thresholds"] == card["thresholds"]  # the checkpoint carries the calibrated thresholds
    assert measured["occurrences"] == card["kws_eval"]["occurrences"]
    assert abs(measured["hits"] - card["kws_eval"]["hits"]) <= 1  # BLAS rounding may move one decision
    assert abs(measured["false_alarms"] - card["kws_eval"]["false_alarms"]) <= 1
    assert measured["hit_rate"] >= 0.90 and measured["median_latency_s"] <= 0.3  # the project's targets


@pytest.mark.slow
@pytest.mark.parametrize("name", [BUNDLED, "spiking-lmuformer-tiny-synth35", "lmuformer-lookahead-tiny-synth35",
                                  "kwt-tiny-synth35"])
def test_bundled_model_reproduces_its_card_on_the_synthetic_test_split(name, synthetic_test_split):
    data = synthetic_test_split
    model = streamlmu.load_model(name)
    offline = evaluate(model, data, "offline", progress=False)
    streaming = evaluate(model, data, "streaming", progress=False)
    card = card_figures()[name]
    assert len(data) == card["test_clips"]
    assert np.array_equal(offline.predictions, streaming.predictions)
    assert streaming.accuracy == pytest.approx(card["test_accuracy_streaming"], abs=1e-9)
    assert offline.accuracy == pytest.approx(card["test_accuracy_offline"], abs=1e-9)


@pytest.mark.slow
def test_truncation_report_of_the_bundled_models_reproduces(synthetic_test_split, tmp_path):
    from streamlmu.apps.cli import main
    committed = json.loads((TRUNCATION_REPORT / "truncation.json").read_text())
    args = ["truncation", "--data", str(synthetic_test_split.root), "--out", str(tmp_path), "--quiet"]
    for report in committed["models"]:
        args += ["--model", report["name"]]
    assert main(args) == 0
    measured = json.loads((tmp_path / "truncation.json").read_text())
    for new, old in zip(measured["models"], committed["models"]):
        assert new["clips"] == old["clips"] and new["full_accuracy"] == pytest.approx(old["full_accuracy"], abs=1e-9)
        assert np.allclose(new["accuracy_by_frames"], old["accuracy_by_frames"], atol=2 / new["clips"])
        assert new["fixed_prefix"]["frames"] == old["fixed_prefix"]["frames"]
        assert new["early_decision"]["mean_frames"] == pytest.approx(old["early_decision"]["mean_frames"], abs=1.0)
