import json

import numpy as np
import pytest

import streamlmu
from streamlmu.data.speech_commands import WORDS_35, SpeechCommands, labels_for
from streamlmu.pretrained import FOLDER, available, pretrained_path
from streamlmu.train.evaluate import evaluate

BUNDLED = "lmuformer-tiny-synth35"


def card_figures() -> dict:
    """The measured figures the model card states, kept beside it as JSON."""
    return json.loads((FOLDER / "model_card.json").read_text())


def test_bundled_models_are_small_and_load_by_name():
    assert BUNDLED in available()
    for name in available():
        assert pretrained_path(name).stat().st_size <= 10 * 2 ** 20
        model = streamlmu.load_model(name)
        assert model.labels == labels_for(35) and not model.training
        assert name in card_figures()
    assert BUNDLED in (FOLDER / "MODEL_CARD.md").read_text()


@pytest.fixture(scope="module")
def synthetic_test_split(tmp_path_factory):
    """The default synthetic corpus's test split, regenerated (about 1 min)."""
    from streamlmu.data.synth import SynthConfig, generate
    root = generate(tmp_path_factory.mktemp("scv2"), SynthConfig(), WORDS_35, workers=2, progress=False)
    return SpeechCommands(root, "testing")


@pytest.mark.slow
@pytest.mark.parametrize("name", [BUNDLED, "spiking-lmuformer-tiny-synth35"])
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
