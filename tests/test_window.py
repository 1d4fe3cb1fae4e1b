"""The sliding-window posterior: the streaming kernel and the parallel form training uses agree."""
import numpy as np
import torch

from streamlmu.audio.window import window_init, window_logits, window_posteriors
from streamlmu.models.registry import build_model


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_window_posteriors_are_the_softmax_of_a_sliding_mean_and_stay_exact():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((2, 20000, 3)) * 3 + 50).astype(np.float32)  # an offset tests rounding
    state = window_init(2, 7, 3)
    chunks = [window_posteriors(logits[:, a:a + n], state) for a, n in ((0, 5), (5, 1), (6, 19994))]
    out = np.concatenate(chunks, axis=1)
    assert np.allclose(out[:, 3], _softmax(logits[:, :4].astype(np.float64).mean(axis=1)), atol=1e-5)  # 4 seen
    assert np.allclose(out[:, -1], _softmax(logits[:, -7:].astype(np.float64).mean(axis=1)), atol=1e-5)


def test_window_logits_are_the_mean_of_the_engines_per_frame_logits():
    model = build_model("lmuformer", "tiny", num_classes=12, dim=16, order=16).eval()
    x = torch.randn(2, 60, 128)
    per_frame, _ = model.streaming(pooling="frame")(x)
    with torch.no_grad():
        running = model(x)[0]
        assert torch.allclose(window_logits(running, model.head.bias, 25), per_frame[:, -25:].mean(1), atol=1e-5)
        for frames in (60, 90, None):  # a window as long as the clip or longer: all of it
            assert torch.allclose(window_logits(running, model.head.bias, frames), running[:, -1], atol=1e-6)


def test_the_streaming_and_the_parallel_form_give_the_same_posteriors():
    model = build_model("lmuformer", "tiny", num_classes=12, dim=16, order=16).eval()
    x = torch.randn(3, 80, 128)
    per_frame, _ = model.streaming(pooling="frame")(x)
    streamed = window_posteriors(per_frame.numpy(), window_init(3, 30, 12))
    with torch.no_grad():
        running = model(x)[0]
        for end in (10, 30, 31, 80):  # fewer frames than the window, as many, and more
            parallel = torch.softmax(window_logits(running[:, :end], model.head.bias, 30), -1)
            assert np.allclose(streamed[:, end - 1], parallel.numpy(), atol=1e-5), end
