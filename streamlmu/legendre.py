"""Legendre Memory Unit mathematics: state-space matrices, discretisation,
impulse response and delay decoding.

The continuous LMU (Voelker et al., NeurIPS 2019) keeps a sliding window of
length ``theta`` of its input ``u`` in an ``order``-dimensional state ``m``::

    theta * dm/dt = A m + B u

With the discrete pair ``(Ad, Bd)`` one frame advances the state as
``m_t = Ad @ m_{t-1} + Bd * u_t``. Everything here is float64 NumPy; the torch
modules cast once when they register their buffers.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import expm
from scipy.special import eval_legendre

DISCRETIZERS = ("zoh", "euler")


def _check_order(order: int) -> None:
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be a positive integer (got {order!r})")


def lmu_matrices(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time LMU matrices (not yet divided by ``theta``).

    ``A[i, j] = (2i+1) * (-1 if i < j else (-1)**(i-j+1))``,
    ``B[i] = (2i+1) * (-1)**i``.

    Shapes: A ``(order, order)``, B ``(order,)``.

    >>> A, B = lmu_matrices(2)
    >>> A.tolist(), B.tolist()
    ([[-1.0, -1.0], [3.0, -3.0]], [1.0, -3.0])
    """
    _check_order(order)
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    sign = np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    A = (2 * i + 1) * sign
    B = (2 * np.arange(order) + 1) * (-1.0) ** np.arange(order)
    return A.astype(np.float64), B.astype(np.float64)


def discretize(
    A: np.ndarray, B: np.ndarray, theta: float, method: str = "zoh", dt: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Discretise ``theta * dm/dt = A m + B u`` with time step ``dt`` (frames).

    ``"zoh"`` (zero-order hold, exact for piecewise-constant input) is stable at
    any order; ``"euler"`` (``Ad = I + dt A / theta``) is cheap but diverges
    when ``order`` is large relative to ``theta``.

    Args:
        A, B: continuous matrices from :func:`lmu_matrices`.
        theta: window length in frames (> 0).
        method: ``"zoh"`` or ``"euler"``.
        dt: time step in frames.

    Shapes: A ``(order, order)``, B ``(order,)`` -> Ad ``(order, order)``, Bd ``(order,)``.
    """
    if method not in DISCRETIZERS:
        raise ValueError(f"method must be one of {DISCRETIZERS} (got {method!r})")
    if not np.isfinite(theta) or theta <= 0:
        raise ValueError(f"theta must be a positive number of frames (got {theta!r})")
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64).reshape(-1)
    order = B.shape[0]
    if A.shape != (order, order):
        raise ValueError(f"A must have shape ({order}, {order}) to match B (got {A.shape})")
    Ac, Bc = A / theta, B / theta
    if method == "euler":
        return np.eye(order) + dt * Ac, dt * Bc
    # ZOH via the matrix exponential of the augmented system [[A, B], [0, 0]].
    aug = np.zeros((order + 1, order + 1))
    aug[:order, :order] = Ac
    aug[:order, order] = Bc
    e = expm(aug * dt)
    return e[:order, :order], e[:order, order].copy()


def euler_coefficients(order: int, theta: float, dt: float = 1.0) -> np.ndarray:
    """``c_i = (2i+1) dt / theta``: the row scales of ``dt A / theta`` and ``dt B / theta``.

    The O(order) Euler kernels take these instead of ``(Ad, Bd)``, since the
    rows of ``A`` and ``B`` differ only by these factors and signs.

    Shapes: -> c ``(order,)``.

    >>> euler_coefficients(3, 2.0).tolist()
    [0.5, 1.5, 2.5]
    """
    _check_order(order)
    if not np.isfinite(theta) or theta <= 0:
        raise ValueError(f"theta must be a positive number of frames (got {theta!r})")
    return (2.0 * np.arange(order) + 1.0) * dt / theta


def impulse_response(Ad: np.ndarray, Bd: np.ndarray, length: int) -> np.ndarray:
    """Response of the discrete memory to a unit impulse at frame 0.

    Obtained by running the step ``m_t = Ad m_{t-1} + Bd u_t`` on
    ``u = (1, 0, 0, ...)``, so ``H[t] = Ad**t @ Bd`` and the memory of any input
    is the causal convolution ``m_t = sum_k H[k] u_{t-k}``.

    Shapes: Ad ``(order, order)``, Bd ``(order,)`` -> H ``(length, order)``.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0 (got {length})")
    Ad = np.asarray(Ad, dtype=np.float64)
    m = np.asarray(Bd, dtype=np.float64).reshape(-1).copy()
    H = np.empty((length, m.shape[0]))
    for t in range(length):
        H[t] = m
        m = Ad @ m
    return H


def delay_weights(order: int, fraction: float) -> np.ndarray:
    """Decoding weights for the input delayed by ``fraction * theta`` frames.

    ``u(t - fraction * theta) ~= m_t @ w`` with ``w_i = P_i(2 * fraction - 1)``
    (Legendre polynomials); valid for ``0 <= fraction <= 1``.

    Shapes: -> w ``(order,)``.

    >>> delay_weights(3, 1.0).tolist()
    [1.0, 1.0, 1.0]
    """
    _check_order(order)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1] (got {fraction!r})")
    return np.array([eval_legendre(i, 2.0 * fraction - 1.0) for i in range(order)])
