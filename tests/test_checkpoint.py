import pytest
import torch

import streamlmu
from streamlmu.audio.features import FbankConfig
from streamlmu.data.speech_commands import labels_for
from streamlmu.models.registry import MODEL_NAMES, build_model
from streamlmu.testing import randomize_batchnorm
from streamlmu.audio.bundle import save_checkpoint


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_load_model_restores_a_ready_model_in_one_call(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, "tiny", num_classes=12)
    if name != "kwt":
        randomize_batchnorm(model, spiking=name.startswith("spiking"))
    model.eval()
    features = FbankConfig(num_mel_bins=128, std=5.0)
    save_checkpoint(tmp_path / "m.pt", model, labels_for(12), features)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    loaded = streamlmu.load_model(tmp_path / "m.pt")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.labels == labels_for(12) and loaded.features == features
    x = torch.randn(2, 20, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])


def test_bad_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        streamlmu.load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt is not a readable streamlmu checkpoint"):
        streamlmu.load_model(tmp_path / "junk.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a streamlmu checkpoint"):
        streamlmu.load_model(tmp_path / "other.pt")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="lmuformer"):
        build_model("resnet")


def test_unknown_bundled_name_lists_the_bundled_models():
    from streamlmu.pretrained import available
    with pytest.raises(FileNotFoundError, match="no bundled model named 'nonexistent'; bundled: " + ", ".join(available())):
        streamlmu.load_model("nonexistent")
