"""Numba kernel for leaky integrate-and-fire neurons (inference).

Per frame, the same float operations as :func:`streamlmu.nn.lif.lif_step` in
the same order (no fast-math), so the kernel and the torch step agree bit for
bit::

    h = v + (x - (v - v_reset)) / tau;   z = h >= threshold;   v = z ? v_reset : h

Shapes: x ``(B, T, N)``, v ``(B, N)``, z_out ``(B, T, N)``, v_out ``(B, N)``;
the scalars have the arrays' dtype. Returns a code of
:mod:`streamlmu.kernels.status`; it never allocates.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from streamlmu.kernels.status import BAD_INPUT, BAD_SHAPE, BAD_STATE, OK


@njit(cache=True, nogil=True)
def lif_scan(x, v, tau, threshold, v_reset, z_out, v_out) -> int:
    batch, time, n = x.shape
    if v.shape != (batch, n) or z_out.shape != x.shape or v_out.shape != v.shape:
        return BAD_SHAPE
    for b in range(batch):
        for i in range(n):
            if not np.isfinite(v[b, i]):
                return BAD_STATE
    for b in range(batch):
        for i in range(n):
            vi = v[b, i]
            for t in range(time):
                xi = x[b, t, i]
                if not np.isfinite(xi):
                    return BAD_INPUT
                h = vi + (xi - (vi - v_reset)) / tau
                if h >= threshold:
                    z_out[b, t, i] = 1.0
                    vi = v_reset
                else:
                    z_out[b, t, i] = 0.0
                    vi = h
            v_out[b, i] = vi
    return OK
