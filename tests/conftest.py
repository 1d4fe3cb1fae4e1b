import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d


def voiced(samples: int, seed: int = 0, level: float = 0.3) -> torch.Tensor:
    """A gliding harmonic tone with noise (about ``level`` peak), float32."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    phase = 2 * torch.pi * torch.cumsum(140 + 60 * torch.sin(2 * torch.pi * 0.7 * t), 0) / 16000
    tone = sum(torch.sin(k * phase) / k for k in range(1, 8))
    return (level * tone / 2.6 + 0.01 * torch.randn(samples, generator=gen)).float()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


def smooth_signal(length: int, sigma: float = 10.0, seed: int = 0) -> np.ndarray:
    """Unit-variance low-pass noise, ``(length,)`` float64."""
    u = gaussian_filter1d(np.random.default_rng(seed).standard_normal(length), sigma)
    return u / u.std()


TINY_WORDS = ("yes", "no", "up", "marvin", "dog", "backward")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small synthetic SCv2 corpus of the diverse recipe: 6 words (3 of the 12-label task's), 12 clips each."""
    from streamlmu.data.synth import SynthConfig, generate
    root = tmp_path_factory.mktemp("scv2")
    return generate(root, SynthConfig(clips_per_word=12, background_seconds=4.0, seed=3, rooms=4), TINY_WORDS,
                    workers=2, progress=False)


@pytest.fixture(scope="session")
def tiny_espeak_corpus(tmp_path_factory):
    """The same words from espeak-ng alone, without rooms or channels: an easy corpus, on which one epoch of a
    tiny model already tells the words apart."""
    from streamlmu.data.synth import SynthConfig, generate
    root = tmp_path_factory.mktemp("scv2-espeak")
    return generate(root, SynthConfig(clips_per_word=12, background_seconds=4.0, seed=3, recipe="espeak"),
                    TINY_WORDS, workers=2, progress=False)


@pytest.fixture(scope="session")
def demo():
    """The bundled demo recording: ``(audio float32 (samples,), rate, truth)`` with truth its word list."""
    import json
    import soundfile
    from streamlmu.pretrained import DEMO_RECORDING, DEMO_TRUTH
    audio, rate = soundfile.read(DEMO_RECORDING, dtype="float32")
    return audio, rate, json.loads(DEMO_TRUTH.read_text())
