import pickle

import pytest
import torch

from conftest import smooth_signal
from streamlmu import LMUMemory, LMUMemoryState, delay_weights
from streamlmu.kernels import legendre as kernels
from streamlmu.testing import check_stream_op, max_abs_diff, run_chunked, run_step_loop, random_chunk_sizes

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture
def count_kernel_calls(monkeypatch):
    """Count calls of each Numba kernel made through LMUMemory."""
    calls: dict[str, int] = {}
    for name in ("lmu_step", "lmu_scan", "lmu_euler_step", "lmu_euler_scan"):
        original = getattr(kernels, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)
        monkeypatch.setattr(kernels, name, counted)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_scan_fft_and_chunks_agree(dtype):
    """Order 256, theta 128, T 512: every path gives the same memory."""
    mem = LMUMemory(input_size=2, order=256, theta=128.0)
    x = torch.randn(3, 512, 2, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        y_scan, s_scan = mem(x, method="scan")
        y_fft, s_fft = mem(x, method="fft")
        y_step, s_step = run_step_loop(mem, x)
        errors = {"fft": max_abs_diff(y_fft, y_scan), "step": max_abs_diff(y_step, y_scan)}
        for k in range(3):
            sizes = random_chunk_sizes(512, gen, max_chunk=100)
            errors[f"scan chunks {k}"] = max_abs_diff(run_chunked(mem, x, sizes)[0], y_scan)
            fft_chunks = run_chunked(lambda c, s: mem(c, s, method="fft"), x, sizes)[0]
            errors[f"fft chunks {k}"] = max_abs_diff(fft_chunks, y_scan)
    print(f"{dtype}: max abs errors vs scan {errors}")
    assert max(errors.values()) <= TOL[dtype], errors
    assert torch.equal(y_step, y_scan), "Numba step loop and Numba scan must agree bit for bit"
    assert max_abs_diff(s_fft, s_scan) <= TOL[dtype]


@pytest.mark.parametrize("discretizer", ["zoh", "euler"])
def test_stream_contract(discretizer):
    mem = LMUMemory(input_size=3, order=16, theta=20.0, discretizer=discretizer)
    errors = check_stream_op(mem, torch.randn(4, 60, 3))
    print(errors)


def test_numba_kernels_serve_inference_and_torch_serves_training(count_kernel_calls):
    mem = LMUMemory(1, 8, 10.0)
    x = torch.randn(2, 5, 1)
    with torch.inference_mode():
        mem.step(x[:, 0], mem.init_state(2))
        mem(x)
    assert count_kernel_calls == {"lmu_step": 1, "lmu_scan": 1}
    xg = x.clone().requires_grad_()
    y, _ = mem(xg)                     # autograd: FFT path, no kernel
    mem.step(xg[:, 0], mem.init_state(2))
    assert count_kernel_calls == {"lmu_step": 1, "lmu_scan": 1}
    assert y.requires_grad
    euler = LMUMemory(1, 8, 10.0, discretizer="euler")
    with torch.no_grad():
        euler.step(x[:, 0], euler.init_state(2))
        euler(x)
    assert count_kernel_calls["lmu_euler_step"] == 1 and count_kernel_calls["lmu_euler_scan"] == 1


def test_kernel_step_equals_torch_step():
    mem = LMUMemory(2, 64, 30.0)
    x = torch.randn(3, 40, 2)
    with torch.no_grad():
        y_kernel, _ = run_step_loop(mem, x)
    xg = x.clone().requires_grad_()
    y_torch, _ = run_step_loop(mem, xg)
    assert max_abs_diff(y_kernel, y_torch.detach()) <= 1e-5


@pytest.mark.parametrize("flatten", [False, True])
def test_interleaved_streams_and_edited_states_through_one_module(flatten):
    """The fast step path keeps a view of its last output; it must not mix streams."""
    mem = LMUMemory(2, 16, 8.0, flatten=flatten)
    xa, xb = torch.randn(1, 30, 2), torch.randn(3, 30, 2)
    with torch.inference_mode():
        ya, _ = run_step_loop(mem, xa)
        yb, _ = run_step_loop(mem, xb)
        sa, sb = mem.init_state(1), mem.init_state(3)
        for t in range(30):
            out_a, sa = mem.step(xa[:, t], sa)
            out_b, sb = mem.step(xb[:, t], sb)
            assert torch.equal(out_a, ya[:, t]) and torch.equal(out_b, yb[:, t])
        y1, s1 = mem.step(xa[:, 0], sa)
        s1.m.zero_()                       # edited in place: the next step must see zeros
        y2, _ = mem.step(xa[:, 1], s1)
        assert torch.equal(y2, mem.step(xa[:, 1], mem.init_state(1))[0])
    restored = pickle.loads(pickle.dumps(mem))
    assert restored._last_step == [(None, None)]


def test_fft_gradients_pass_gradcheck():
    mem = LMUMemory(input_size=2, order=6, theta=5.0)
    x = torch.randn(2, 9, 2, dtype=torch.float64, requires_grad=True)
    m0 = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)

    def f(x, m0):
        return mem(x, LMUMemoryState(m0), method="fft")[0]
    assert torch.autograd.gradcheck(f, (x, m0))


def test_fft_gradients_equal_scan_gradients():
    mem = LMUMemory(input_size=2, order=32, theta=16.0)
    x = torch.randn(3, 50, 2, dtype=torch.float64)
    m0 = torch.randn(3, 2, 32, dtype=torch.float64)
    weight = torch.randn(3, 50, 2, 32, dtype=torch.float64)
    grads = {}
    for method in ("fft", "scan"):
        xi, mi = x.clone().requires_grad_(), m0.clone().requires_grad_()
        y, state = mem(xi, LMUMemoryState(mi), method=method)
        ((y * weight).sum() + state.m.square().sum()).backward()
        grads[method] = (xi.grad, mi.grad)
    assert max_abs_diff(grads["fft"], grads["scan"]) <= 1e-9


def test_bfloat16_input_runs_in_float32():
    """Autocast hands the memory bfloat16; it integrates the widened input in float32."""
    mem = LMUMemory(input_size=2, order=16, theta=16.0)
    x = torch.randn(3, 40, 2).to(torch.bfloat16).requires_grad_()
    y, state = mem(x)
    ref, ref_state = mem(x.detach().float(), method="fft")
    assert y.dtype == state.m.dtype == torch.float32
    assert torch.equal(y.detach(), ref) and torch.equal(state.m.detach(), ref_state.m)
    y.square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and float(x.grad.abs().sum()) > 0


def test_memory_decodes_delays_when_streamed():
    theta, order = 100.0, 32
    mem = LMUMemory(1, order, theta)
    u = torch.tensor(smooth_signal(2000), dtype=torch.float32)
    with torch.no_grad():
        ms, _ = mem(u.view(1, -1, 1))
    decoded = ms[0, :, 0] @ torch.tensor(delay_weights(order, 0.5), dtype=torch.float32)
    lag = 50
    corr = torch.corrcoef(torch.stack([decoded[200:], u[200 - lag:-lag]]))[0, 1]
    assert corr > 0.99


def test_flatten_and_empty_chunks():
    mem = LMUMemory(3, 4, 5.0, flatten=True)
    y, state = mem(torch.randn(2, 6, 3))
    assert y.shape == (2, 6, 12) and state.m.shape == (2, 3, 4)
    y0, state0 = mem(torch.randn(2, 0, 3), state)
    assert y0.shape == (2, 0, 12) and state0 is state
    y1, _ = mem.step(torch.randn(2, 3), state)
    assert y1.shape == (2, 12)


def test_reset_clears_only_masked_streams():
    mem = LMUMemory(1, 8, 10.0)
    _, state = mem(torch.randn(3, 20, 1))
    cleared = mem.reset(state, torch.tensor([False, True, False]))
    assert torch.equal(cleared.m[1], torch.zeros(1, 8))
    assert torch.equal(cleared.m[[0, 2]], state.m[[0, 2]])
    assert not torch.equal(state.m[1], torch.zeros(1, 8)), "reset must not modify its input"
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(batch=3,\)"):
        mem.reset(state, torch.tensor([True, False]))


def test_saved_state_resumes_bit_exactly(tmp_path):
    mem = LMUMemory(2, 32, 16.0)
    x = torch.randn(2, 40, 2)
    with torch.no_grad():
        y_full, _ = mem(x)
        _, mid = mem(x[:, :17])
        torch.save(mid, tmp_path / "state.pt")
        resumed = torch.load(tmp_path / "state.pt")   # weights_only=True by default
        y_rest, _ = mem(x[:, 17:], resumed)
    assert type(resumed) is LMUMemoryState
    assert torch.equal(y_rest, y_full[:, 17:])


@pytest.mark.parametrize("bad,error,message", [
    (torch.randn(2, 5, 2), ValueError, r"x must have shape \(batch, time, features=3\) \(got \(2, 5, 2\)\)"),
    (torch.randn(5, 3), ValueError, r"x must have shape \(batch, time, features=3\)"),
    (torch.ones(2, 5, 3, dtype=torch.int64), TypeError, "x must be a floating-point tensor"),
    ([[0.0, 1.0, 2.0]], TypeError, r"x must be a torch.Tensor of shape \(batch, time, features=3\)"),
])
def test_forward_rejects_bad_input(bad, error, message):
    with pytest.raises(error, match=message):
        LMUMemory(3, 4, 5.0)(bad)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_raises_and_keeps_state(grad, value):
    mem = LMUMemory(1, 8, 10.0)
    _, state = mem(torch.randn(2, 5, 1))
    before = state.m.clone()
    x = torch.randn(2, 1)
    x[1, 0] = value
    x.requires_grad_(grad)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        mem.step(x, state)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        mem(x.unsqueeze(1), state)
    assert torch.equal(state.m, before)
    mem.step(torch.zeros(2, 1), state)  # the stream goes on


def test_bad_states_are_rejected():
    mem = LMUMemory(1, 8, 10.0)
    x = torch.randn(2, 1)
    with pytest.raises(ValueError, match=r"state.m must have shape \(batch, channels, order\)=\(2, 1, 8\)"):
        mem.step(x, mem.init_state(3))
    with pytest.raises(ValueError, match=r"state.m must have shape .*\(2, 1, 8\) \(got \(2, 1, 16\)\)"):
        mem.step(x, LMUMemory(1, 16, 10.0).init_state(2))
    with pytest.raises(TypeError, match="state must be an LMUMemoryState"):
        mem.step(x, (torch.zeros(2, 1, 8),))
    with pytest.raises(TypeError, match="must match the input's dtype"):
        mem.step(x, mem.init_state(2, dtype=torch.float64))
    nan_state = LMUMemoryState(torch.full((2, 1, 8), float("nan")))
    with pytest.raises(ValueError, match="state.m contains NaN or Inf"):
        mem.step(x, nan_state)
    with pytest.raises(ValueError, match="state.m contains NaN or Inf"):
        mem(x.unsqueeze(1), nan_state, method="fft")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="discretizer must be one of"):
        LMUMemory(1, 8, 10.0, discretizer="bilinear")
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        LMUMemory(0, 8, 10.0)
    with pytest.raises(ValueError, match="order must be a positive integer"):
        LMUMemory(1, 0, 10.0)
    with pytest.raises(ValueError, match="theta must be a positive"):
        LMUMemory(1, 8, -1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        LMUMemory(1, 8, 10.0)(torch.randn(1, 3, 1), method="magic")


@pytest.mark.slow
def test_long_stream_at_order_512_stays_exact():
    """10^4 frames, order 512: Numba scan, FFT and 1000-frame chunks agree in float32."""
    mem = LMUMemory(input_size=1, order=512, theta=256.0)
    x = torch.tensor(smooth_signal(10_000, sigma=3.0), dtype=torch.float32).view(1, -1, 1)
    with torch.no_grad():
        y_scan, _ = mem(x)
        y_fft, _ = mem(x, method="fft")
        y_chunks, _ = run_chunked(lambda c, s: mem(c, s, method="fft"), x, [1000] * 10)
    errors = {"fft": max_abs_diff(y_fft, y_scan), "fft chunks": max_abs_diff(y_chunks, y_scan)}
    print(errors, "max |m|", y_scan.abs().max().item())
    assert max(errors.values()) <= 1e-5 * max(1.0, y_scan.abs().max().item()), errors
