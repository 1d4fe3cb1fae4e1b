import math

import numpy as np
import pytest
import torch
from numba import njit
from test_lmuformer import build

from streamlmu.engine import EngineState, StreamRunner
from streamlmu.kernels import dense
from streamlmu.kernels.engine import erf32
from streamlmu.testing import check_stream_op, max_abs_diff, run_step_loop


def step_outputs(model, x):
    with torch.no_grad():
        return run_step_loop(model, x)[0]


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("spiking", [False, True])
@pytest.mark.parametrize("lookahead", [0, 1])
def test_engine_equals_the_torch_step(preset, spiking, lookahead):
    model = build(preset, spiking, lookahead=lookahead)
    x = torch.randn(3, 30 if preset == "paper" else 60, 128, generator=torch.Generator().manual_seed(3))
    expected = step_outputs(model, x)
    exact, _ = model.streaming(blas_min_batch=None)(x)
    blas, _ = model.streaming(blas_min_batch=1)(x)
    errors = {"row kernels": max_abs_diff(exact, expected), "BLAS": max_abs_diff(blas, expected)}
    print(f"{preset} {type(model).__name__} lookahead {lookahead}: engine vs torch step {errors}")
    assert errors["row kernels"] <= 1e-5 and errors["BLAS"] <= 1e-5
    if spiking:  # same kernels, same folded weights: the same bits
        assert errors["row kernels"] == 0.0


@pytest.mark.parametrize("spiking", [False, True])
def test_engine_is_a_stream_operator(spiking):
    runner = build("tiny", spiking, lookahead=1).streaming()
    check_stream_op(runner, torch.randn(3, 20, 128))
    assert runner.latency_frames == 5


@pytest.mark.parametrize("spiking", [False, True])
def test_frame_pooling_averages_to_the_models_output(spiking):
    model = build("tiny", spiking)
    x = torch.randn(2, 40, 128, generator=torch.Generator().manual_seed(5))
    pooled, _ = model.streaming()(x)
    per_frame, _ = model.streaming(pooling="frame")(x)
    running = per_frame.cumsum(dim=1) / torch.arange(1, 41).view(1, -1, 1)
    assert max_abs_diff(running, pooled) <= 1e-5
    assert max_abs_diff(per_frame, pooled) > 1e-2  # the frames differ from their mean
    with pytest.raises(ValueError, match="pooling must be one of"):
        model.streaming(pooling="max")


def test_reset_restarts_only_the_masked_stream():
    model = build("tiny", spiking=True)
    runner = model.streaming()
    x = torch.randn(2, 30, 128)
    _, state = runner(x[:, :10])
    state = runner.reset(state, torch.tensor([True, False]))
    y, _ = runner(x[:, 10:], state)
    fresh, _ = runner(x[:1, 10:])
    continued, _ = runner(x[1:])
    assert torch.equal(y[0], fresh[0]) and torch.equal(y[1], continued[0, 10:])


def test_engine_bad_input_is_a_clear_error():
    model = build("tiny", spiking=False)
    runner = model.streaming()
    state = runner.init_state(2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, features=128\)"):
        runner.step(torch.randn(2, 40), state)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, features=128\)"):
        runner.step(torch.randn(2, 1, 128), state)
    with pytest.raises(TypeError, match="float32"):
        runner.step(torch.randn(2, 128, dtype=torch.float64), state)
    bad = torch.randn(2, 128)
    bad[1, 5] = float("inf")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        runner.step(bad, state)
    with pytest.raises(ValueError, match=r"expected values \(batch, state_size\)=\(2, "):
        runner.step(torch.randn(2, 128), runner.init_state(3))
    other = build("tiny", spiking=True).streaming()
    with pytest.raises(ValueError, match="state does not belong to this LMUFormer engine"):
        runner.step(torch.randn(2, 128), other.init_state(2))
    with pytest.raises(TypeError, match="state must be an EngineState"):
        runner.step(torch.randn(2, 128), model.init_state(2))
    _, good = runner.step(torch.randn(2, 128), state)
    corrupt = EngineState(good.values.clone(), good.frames.clone())
    corrupt.values[0, 3] = float("nan")
    with pytest.raises(ValueError, match="state.values contains NaN or Inf"):
        runner.step(torch.randn(2, 128), corrupt)
    assert torch.isfinite(good.values).all()  # the user's state is untouched
    with pytest.raises(ValueError, match="call model.eval"):
        StreamRunner(build("tiny", spiking=False).train())
    with pytest.raises(TypeError, match="float32 only"):
        runner.init_state(1, dtype=torch.float64)


def test_linear_row_has_the_bits_of_linear_rows():
    rng = np.random.default_rng(0)
    for k_in, n_out, zeros in [(384, 256, 0.0), (67, 35, 0.5), (256, 1, 0.93)]:
        x = rng.standard_normal((5, k_in)).astype(np.float32)
        x[rng.random(x.shape) < zeros] = 0.0
        wT = rng.standard_normal((k_in, n_out)).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32)
        rows = np.empty((5, n_out), np.float32)
        assert dense.linear_rows(x, wT, b, rows) == dense.OK
        for sparse in (False, True):
            one = np.empty(n_out, np.float32)
            for r in range(5):
                dense.linear_row(x[r], wT, b, one, sparse)
                assert np.array_equal(one, rows[r])


@njit
def _erf_all(a, out):
    for i in range(a.shape[0]):
        out[i] = erf32(a[i])


def test_vectorisable_erf_is_accurate():
    a = np.linspace(-7, 7, 200_001).astype(np.float32)
    out = np.empty_like(a)
    _erf_all(a, out)
    error = np.abs(out - np.array([math.erf(float(v)) for v in a])).max()
    print(f"erf32 max abs error {error:.2e}")
    assert error <= 3e-7
