import math

import numpy as np
import pytest
import torch
from numba import njit
from test_lmuformer import build

from streamlmu import cpu
from streamlmu.engine import EngineState, StreamRunner
from streamlmu.kernels import dense, quant
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


@pytest.mark.parametrize("blas_min_batch", [None, 1])
def test_a_chunk_in_one_call_equals_its_frames_stepped(blas_min_batch):
    runner = build("tiny", spiking=False).streaming(blas_min_batch=blas_min_batch)
    x = torch.randn(2, 7, 128, generator=torch.Generator().manual_seed(6))
    y, state = runner(x)
    stepped = runner.init_state(2)
    for t in range(7):
        y_t, stepped = runner.step(x[:, t].contiguous(), stepped)
        assert torch.equal(y[:, t], y_t)
    assert torch.equal(state.values, stepped.values) and torch.equal(state.frames, torch.full((2,), 7))
    bad = x.clone()
    bad[1, 4, 9] = float("nan")  # a bad frame inside the chunk
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        runner(bad, state)
    assert torch.equal(state.values, stepped.values)  # the state given is untouched


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


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_int8_dense_layers_stay_close_to_float(preset):
    model = build(preset, spiking=False)
    x = torch.randn(4, 40, 128, generator=torch.Generator().manual_seed(3))
    reference, _ = model.streaming()(x)
    quantized, _ = model.streaming(int8_min_batch=1)(x)
    error = max_abs_diff(quantized, reference) / float(reference.abs().max())
    print(f"{preset}: int8 engine vs float32, largest error relative to the largest logit {error:.4f}")
    assert 0.0 < error <= 3e-2  # quantized (not the float path), and close


def test_int8_stream_does_not_depend_on_the_other_streams():
    model = build("tiny", spiking=True)
    x = torch.randn(3, 20, 128, generator=torch.Generator().manual_seed(4))
    others = x.clone()
    others[1:] = torch.randn(2, 20, 128) * 10.0  # louder neighbours: other per-stream scales
    runner = model.streaming(int8_min_batch=1)
    assert torch.equal(runner(x)[0][0], runner(others)[0][0])
    below, _ = model.streaming(int8_min_batch=4)(x)  # fewer streams than int8_min_batch: the float path
    assert torch.equal(below, model.streaming()(x)[0])


def test_int8_path_reports_bad_input_like_the_float_path():
    runner = build("tiny", spiking=False).streaming(int8_min_batch=1)
    state = runner.init_state(2)
    bad = torch.randn(2, 128)
    bad[0, 7] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        runner.step(bad, state)
    _, good = runner.step(torch.randn(2, 128), state)
    corrupt = EngineState(good.values.clone(), good.frames.clone())
    corrupt.values[1, 0] = float("inf")
    with pytest.raises(ValueError, match="state.values contains NaN or Inf"):
        runner.step(torch.randn(2, 128), corrupt)
    assert torch.equal(good.frames, torch.ones(2, dtype=torch.int64))


def test_row_quantization_kernels():
    rng = np.random.default_rng(0)
    ws = rng.normal(size=(3, 40)).astype(np.float32)
    ws[1, 10:30] = 0.0                                       # a zero row in the quantized span
    ws[2, 10:30] = rng.integers(0, 2, 20).astype(np.float32)  # spikes: 0/1
    q, scales = np.zeros((3, 20), np.int8), np.zeros(3, np.float32)
    quant.quantize_rows(ws, 10, 20, q, scales)
    peak = np.abs(ws[:, 10:30]).max(1)
    assert np.allclose(scales, np.where(peak > 0, peak / 127, 1.0))
    assert np.array_equal(q, np.rint(ws[:, 10:30] / scales[:, None]).astype(np.int8))
    assert np.array_equal(q[2], ws[2, 10:30] * 127) and not q[1].any()
    wq, columns = quant.quantize_columns(rng.normal(size=(20, 5)).astype(np.float32))
    assert np.abs(wq).max(0).tolist() == [127] * 5
    acc = q.astype(np.int32) @ wq.astype(np.int32)
    bias = np.arange(5, dtype=np.float32)
    quant.dequantize_rows(acc, scales, columns, bias, ws, 0)
    assert np.allclose(ws[:, :5], acc * scales[:, None] * columns[None] + bias, rtol=1e-6)


@pytest.mark.parametrize("has_dot", [False, True, None])
def test_int8_on_a_cpu_without_int8_dot_products_warns(monkeypatch, recwarn, has_dot):
    monkeypatch.setattr(cpu, "cpu_has", lambda flags: has_dot if flags == cpu.INT8_DOT_FLAGS else None)
    model = build("tiny", spiking=False)
    model.streaming()  # float32 never warns
    runner = model.streaming(int8_min_batch=1)
    caught = [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert (len(caught) == 1) == (has_dot is False)
    if has_dot is False:
        assert "avx512_vnni" in str(caught[0].message) and "slower than float32" in str(caught[0].message)
        assert caught[0].filename == __file__  # the user's line, not the library's
    assert runner.int8_min_batch == 1  # still what was asked for
