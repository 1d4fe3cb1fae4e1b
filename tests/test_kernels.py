import numpy as np
import pytest
from numba import njit
from numba.core.runtime import _nrt_python, rtsys

from streamlmu.kernels import legendre as K
from streamlmu.legendre import discretize, euler_coefficients, lmu_matrices

TOL = {np.float32: 2e-5, np.float64: 1e-12}


def params(order, theta, method, dtype):
    Ad, Bd = discretize(*lmu_matrices(order), theta, method)
    return Ad.astype(dtype), Bd.astype(dtype)


def reference_scan(u, m, Ad, Bd):
    """NumPy reference: u (B, T, C), m (B, C, N) -> (B, T, C, N)."""
    out = []
    for t in range(u.shape[1]):
        m = m @ Ad.T + u[:, t, :, None] * Bd
        out.append(m)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,channels,order", [(1, 1, 1), (3, 2, 7), (2, 1, 256)])
def test_dense_step_and_scan_match_numpy(dtype, batch, channels, order):
    rng = np.random.default_rng(1)
    Ad, Bd = params(order, 50.0, "zoh", dtype)
    u = rng.standard_normal((batch, 20, channels)).astype(dtype)
    m0 = rng.standard_normal((batch, channels, order)).astype(dtype)
    ref = reference_scan(u.astype(np.float64), m0.astype(np.float64), Ad.astype(np.float64), Bd.astype(np.float64))
    scale = max(1.0, np.abs(ref).max())

    out = np.empty((batch, 20, channels, order), dtype)
    assert K.lmu_scan(u, m0, Ad, Bd, out) == K.OK
    assert np.abs(out - ref).max() <= TOL[dtype] * scale

    m, step_out = m0, np.empty_like(m0)
    for t in range(20):
        assert K.lmu_step(np.ascontiguousarray(u[:, t]), m, Ad, Bd, step_out) == K.OK
        m = step_out.copy()
        assert np.array_equal(m, out[:, t]), "step loop and scan must agree bit for bit"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", [1, 2, 5, 64, 513])
def test_euler_prefix_sum_step_matches_dense_euler(dtype, order):
    rng = np.random.default_rng(2)
    theta = float(max(order * order, 4))  # Euler is stable only for theta of order order**2
    Ad, Bd = params(order, theta, "euler", np.float64)
    u = rng.standard_normal((2, 15, 3)).astype(dtype)
    m0 = rng.standard_normal((2, 3, order)).astype(dtype)
    ref = reference_scan(u.astype(np.float64), m0.astype(np.float64), Ad, Bd)
    coef = euler_coefficients(order, theta).astype(dtype)
    out = np.empty((2, 15, 3, order), dtype)
    assert K.lmu_euler_scan(u, m0, coef, out) == K.OK
    assert np.abs(out - ref).max() <= TOL[dtype] * max(1.0, np.abs(ref).max())
    step_out = np.empty_like(m0)
    assert K.lmu_euler_step(np.ascontiguousarray(u[:, 0]), m0, coef, step_out) == K.OK
    assert np.array_equal(step_out, out[:, 0])


@pytest.mark.parametrize("kernel", ["dense", "euler"])
def test_non_finite_values_are_reported_not_propagated(kernel):
    Ad, Bd = params(8, 10.0, "zoh", np.float32)
    m = np.zeros((2, 1, 8), np.float32)
    out = np.empty_like(m)
    run = (lambda u, m: K.lmu_step(u, m, Ad, Bd, out)) if kernel == "dense" else \
          (lambda u, m: K.lmu_euler_step(u, m, euler_coefficients(8, 10.0).astype(np.float32), out))
    u = np.zeros((2, 1), np.float32)
    assert run(u, m) == K.OK
    u[1, 0] = np.nan
    assert run(u, m) == K.BAD_INPUT
    u[1, 0] = np.inf
    assert run(u, m) == K.BAD_INPUT
    u[1, 0] = 0.0
    m[0, 0, 3] = -np.inf
    assert run(u, m) == K.BAD_STATE


@pytest.mark.parametrize("kernel", ["dense", "euler"])
def test_mismatched_shapes_are_reported_before_any_access(kernel):
    order = 8
    Ad, Bd = params(order, 10.0, "zoh", np.float32)
    coef = euler_coefficients(order, 10.0).astype(np.float32)
    extra = (Ad, Bd) if kernel == "dense" else (coef,)
    step = K.lmu_step if kernel == "dense" else K.lmu_euler_step
    scan = K.lmu_scan if kernel == "dense" else K.lmu_euler_scan
    m = np.zeros((2, 3, order), np.float32)
    for u, out in [(np.zeros((2, 2), np.float32), np.empty_like(m)),        # channels
                   (np.zeros((1, 3), np.float32), np.empty_like(m)),        # batch
                   (np.zeros((2, 3), np.float32), np.empty((2, 3, 4), np.float32))]:  # out
        out[...] = 7.0
        assert step(u, m, *extra, out) == K.BAD_SHAPE
        assert (out == 7.0).all()
    outs = np.full((2, 5, 3, order), 7.0, np.float32)
    assert scan(np.zeros((2, 5, 2), np.float32), m, *extra, outs) == K.BAD_SHAPE
    assert scan(np.zeros((2, 6, 3), np.float32), m, *extra, outs) == K.BAD_SHAPE
    assert step(np.zeros((2, 3), np.float32), np.zeros((2, 3, order + 1), np.float32), *extra,
                np.empty((2, 3, order + 1), np.float32)) == K.BAD_SHAPE
    assert (outs == 7.0).all()


@njit
def _repeat_dense(n, u, us, m, Ad, Bd, out, outs):
    for _ in range(n):
        K.lmu_step(u, m, Ad, Bd, out)
        K.lmu_scan(us, m, Ad, Bd, outs)


@njit
def _repeat_euler(n, u, us, m, coef, out, outs):
    for _ in range(n):
        K.lmu_euler_step(u, m, coef, out)
        K.lmu_euler_scan(us, m, coef, outs)


def _allocations(call) -> int:
    _nrt_python.memsys_enable_stats()
    before = rtsys.get_allocation_stats().alloc
    call()
    return rtsys.get_allocation_stats().alloc - before


def test_kernels_do_not_allocate():
    """Driven from compiled code (no Python boxing), the kernels allocate nothing."""
    Ad, Bd = params(64, 32.0, "zoh", np.float32)
    coef = euler_coefficients(64, 32.0).astype(np.float32)
    u, us = np.ones((4, 1), np.float32), np.ones((4, 10, 1), np.float32)
    m = np.zeros((4, 1, 64), np.float32)
    out, outs = np.empty_like(m), np.empty((4, 10, 1, 64), np.float32)
    allocating = njit(lambda n: np.empty(n).sum())
    for call in (lambda: allocating(3), lambda: _repeat_dense(1, u, us, m, Ad, Bd, out, outs),
                 lambda: _repeat_euler(1, u, us, m, coef, out, outs)):
        call()  # compile
    assert _allocations(lambda: allocating(3)) > 0, "the allocation counter must see an allocation"
    assert _allocations(lambda: _repeat_dense(1, u, us, m, Ad, Bd, out, outs)) == \
        _allocations(lambda: _repeat_dense(200, u, us, m, Ad, Bd, out, outs)), "dense kernels allocate per call"
    assert _allocations(lambda: _repeat_euler(1, u, us, m, coef, out, outs)) == \
        _allocations(lambda: _repeat_euler(200, u, us, m, coef, out, outs)), "Euler kernels allocate per call"
