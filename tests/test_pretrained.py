import json
from pathlib import Path

import numpy as np
import pytest

import streamlmu
from streamlmu.data.speech_commands import WORDS_35, SpeechCommands, labels_for
from streamlmu.pretrained import DEFAULT_KWS_MODEL, FOLDER, available, pretrained_path
from streamlmu.train.evaluate import evaluate

BUNDLED = "lmuformer-tiny-synth35"
ESPEAK_SPOTTER = "lmuformer-tiny-synth12-kws"  # filterbank, espeak-ng only; the default before the voices models
# trained on the diverse corpus (their cards' "synth"; engines35's and asr35's with DECtalk too, piper35's with DECtalk
# and Piper)
VOICES_35 = ["lmuformer-tiny-piper35", "lmuformer-tiny-engines35", "lmuformer-tiny-asr35", "lmuformer-tiny-voices35",
             "spiking-lmuformer-tiny-voices35"]
TRUNCATION_REPORT = Path(__file__).parents[1] / "bench" / "results" / "truncation"


def card_figures() -> dict:
    """The measured figures the model card states, kept beside it as JSON."""
    return json.loads((FOLDER / "model_card.json").read_text())


def test_bundled_models_are_small_and_load_by_name():
    assert BUNDLED in available() and set(VOICES_35) <= set(available())
    for name in available():
        assert pretrained_path(name).stat().st_size <= 10 * 2 ** 20
        model = streamlmu.load_model(name)
        assert model.labels in (labels_for(35), labels_for(12)) and not model.training
        assert name in card_figures()
        assert (FOLDER / f"{name}.md").read_text().startswith(f"# {name}\n")


@pytest.fixture(scope="module")
def test_split_of(tmp_path_factory):
    """``test_split_of(name)``: the test split of the synthetic corpus a bundled model was trained on (its card's
    ``synth``: the espeak-ng corpus unless it says otherwise), regenerated once per module (1-3 min)."""
    from streamlmu.data.synth import SynthConfig, generate
    made: dict[str, SpeechCommands] = {}

    def split(name: str) -> SpeechCommands:
        synth = card_figures()[name].get("synth", {"recipe": "espeak"})
        key = json.dumps(synth, sort_keys=True)
        if key not in made:
            root = generate(tmp_path_factory.mktemp("scv2"), SynthConfig(**synth), WORDS_35, workers=2,
                            progress=False, splits=("testing",))
            made[key] = SpeechCommands(root, "testing")
        return made[key]
    return split


@pytest.fixture(scope="module")
def synthetic_test_split(test_split_of):
    """The test split of the espeak-ng corpus the synth models were trained on."""
    return test_split_of(BUNDLED)


def _spotter_figures(name: str, split: SpeechCommands, tmp_path: Path, figures: str = "kws_eval",
                     phrases: bool = False) -> dict:
    """``kws-eval`` of bundled spotter ``name`` on the test streams (``phrases``: phrase streams) of ``split``,
    checked against the card's ``figures`` (measured with the card's ``kws_eval`` minutes and streams)."""
    from streamlmu.apps.cli import main
    card = card_figures()[name]
    out = tmp_path / f"{figures}.json"
    assert main(["kws-eval", "--model", name, "--data", str(split.root), "--minutes", str(card["kws_eval"]["minutes"]),
                 "--streams", str(card["kws_eval"]["streams"]), "--plot", "", "--json", str(out), "--quiet"]
                + (["--phrases"] if phrases else [])) == 0
    measured = json.loads(out.read_text())
    assert measured["thresholds"] == card["thresholds"]  # the checkpoint carries the calibrated thresholds
    assert measured["occurrences"] == card[figures]["occurrences"]
    assert abs(measured["hits"] - card[figures]["hits"]) <= 1  # BLAS rounding may move one decision
    assert abs(measured["false_alarms"] - card[figures]["false_alarms"]) <= 1
    return measured


def test_espeak_spotter_reproduces_its_card_on_the_synthetic_test_split(test_split_of, tmp_path):
    """The live-spotting figures of the filterbank spotter's card (a few minutes: the test split, then its streams)."""
    measured = _spotter_figures(ESPEAK_SPOTTER, test_split_of(ESPEAK_SPOTTER), tmp_path)
    assert measured["hit_rate"] >= 0.90 and measured["median_latency_s"] <= 0.3  # the project's targets


@pytest.mark.slow
def test_default_spotter_reproduces_its_card_on_both_test_splits(test_split_of, tmp_path):
    """The default spotter's card: its own (diverse) corpus's test streams, word and phrase streams, and the
    espeak-ng corpus's word streams."""
    assert DEFAULT_KWS_MODEL != ESPEAK_SPOTTER
    _spotter_figures(DEFAULT_KWS_MODEL, test_split_of(DEFAULT_KWS_MODEL), tmp_path)
    _spotter_figures(DEFAULT_KWS_MODEL, test_split_of(DEFAULT_KWS_MODEL), tmp_path, "phrases_kws_eval", phrases=True)
    _spotter_figures(DEFAULT_KWS_MODEL, test_split_of(ESPEAK_SPOTTER), tmp_path, "espeak_corpus_kws_eval")


@pytest.mark.slow
@pytest.mark.parametrize("name", [BUNDLED, "spiking-lmuformer-tiny-synth35", "lmuformer-lookahead-tiny-synth35",
                                  "kwt-tiny-synth35", *VOICES_35])
def test_bundled_model_reproduces_its_card_on_the_synthetic_test_split(name, test_split_of):
    data = test_split_of(name)
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
