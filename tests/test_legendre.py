import numpy as np
import pytest
from scipy.signal import cont2discrete

from conftest import smooth_signal
from streamlmu.legendre import delay_weights, discretize, impulse_response, lmu_matrices


def test_matrices_follow_the_closed_form():
    A, B = lmu_matrices(5)
    for i in range(5):
        assert B[i] == (2 * i + 1) * (-1) ** i
        for j in range(5):
            expected = (2 * i + 1) * (-1 if i < j else (-1) ** (i - j + 1))
            assert A[i, j] == expected


@pytest.mark.parametrize("order,theta", [(1, 1.0), (6, 10.0), (64, 128.0), (256, 128.0)])
def test_zoh_matches_scipy_cont2discrete(order, theta):
    A, B = lmu_matrices(order)
    Ad, Bd = discretize(A, B, theta, "zoh")
    ref = cont2discrete((A / theta, B[:, None] / theta, np.eye(order), np.zeros((order, 1))), 1.0, method="zoh")
    assert np.abs(Ad - ref[0]).max() <= 1e-9 * max(1.0, np.abs(ref[0]).max())
    assert np.abs(Bd - ref[1][:, 0]).max() <= 1e-9 * max(1.0, np.abs(ref[1]).max())


def test_euler_is_identity_plus_scaled_A():
    A, B = lmu_matrices(4)
    Ad, Bd = discretize(A, B, 8.0, "euler")
    np.testing.assert_allclose(Ad, np.eye(4) + A / 8.0)
    np.testing.assert_allclose(Bd, B / 8.0)


def test_zoh_stays_bounded_where_euler_diverges():
    A, B = lmu_matrices(512)
    theta, steps = 128.0, 10_000
    u = np.sin(np.arange(steps) * 0.05)
    norms = {}
    for method in ("zoh", "euler"):
        Ad, Bd = discretize(A, B, theta, method)
        m = np.zeros(512)
        peak = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            for t in range(steps):
                m = Ad @ m + Bd * u[t]
                peak = max(peak, float(np.abs(m).max()))
                if not np.isfinite(peak) or peak > 1e12:
                    break
        norms[method] = peak
    assert norms["zoh"] < 100.0, norms
    assert not np.isfinite(norms["euler"]) or norms["euler"] > 1e12, norms


def test_impulse_response_is_the_step_on_an_impulse():
    A, B = lmu_matrices(8)
    Ad, Bd = discretize(A, B, 10.0)
    H = impulse_response(Ad, Bd, 20)
    assert H.shape == (20, 8)
    np.testing.assert_allclose(H[0], Bd)
    np.testing.assert_allclose(H[5], np.linalg.matrix_power(Ad, 5) @ Bd, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_memory_decodes_the_delayed_input(fraction):
    order, theta, length = 32, 100.0, 3000
    A, B = lmu_matrices(order)
    Ad, Bd = discretize(A, B, theta)
    u = smooth_signal(length)
    m = np.zeros(order)
    ms = np.empty((length, order))
    for t in range(length):
        m = Ad @ m + Bd * u[t]
        ms[t] = m
    delay = int(round(fraction * theta))
    decoded = ms @ delay_weights(order, fraction)
    start = 2 * int(theta)
    corr = np.corrcoef(decoded[start:], u[start - delay:length - delay])[0, 1]
    assert corr >= 0.99, f"delay {delay} frames: correlation {corr:.4f}"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="order must be a positive integer"):
        lmu_matrices(0)
    A, B = lmu_matrices(3)
    with pytest.raises(ValueError, match="method must be one of"):
        discretize(A, B, 10.0, "rk4")
    with pytest.raises(ValueError, match="theta must be a positive"):
        discretize(A, B, 0.0)
    with pytest.raises(ValueError, match=r"A must have shape \(3, 3\)"):
        discretize(A[:2], B, 10.0)
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\]"):
        delay_weights(3, 1.5)
    with pytest.raises(ValueError, match="length must be >= 0"):
        impulse_response(A, B, -1)
