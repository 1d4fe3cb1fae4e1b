"""Numba kernels for leaky integrate-and-fire neurons: inference, and training with a surrogate gradient.

Per frame, the same float operations as :func:`streamlmu.nn.lif.lif_step` in
the same order (no fast-math), so the kernels and the torch step agree bit for
bit::

    h = v + (x - (v - v_reset)) / tau;   z = h >= threshold;   v = z ? v_reset : h

Training keeps the surrogate's argument ``u = alpha (h - threshold)`` for the
backward pass, which runs the chain rule of that step in reverse time: the
spike's gradient is the sigmoid surrogate's, ``alpha s (1 - s)`` with
``s = sigmoid(u)``, and the hard reset passes no gradient (a neuron that fired
forgets its ``h``).

Shapes: x, z, u, s and their gradients ``(B, T, N)``; v, v_out and their
gradients ``(B, N)``; the scalars have the arrays' dtype. Each kernel returns
a code of :mod:`streamlmu.kernels.status`; none allocates but the backward
scan, one row of scratch.
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


@njit(cache=True, nogil=True)
def lif_scan_train(x, v, tau, threshold, v_reset, alpha, z_out, u_out, v_out) -> int:
    """The forward scan, also writing each frame's surrogate argument ``u``; ``v_out`` holds the running membrane.

    A non-finite value is flagged, not branched on, inside the frame loop, so that the loop vectorises
    (three times faster); the checks that name the culprit run only on failure.
    """
    batch, time, n = x.shape
    if v.shape != (batch, n) or z_out.shape != x.shape or u_out.shape != x.shape or v_out.shape != v.shape:
        return BAD_SHAPE
    code = OK
    for b in range(batch):
        vb = v_out[b]
        finite = True
        for i in range(n):
            vb[i] = v[b, i]
            finite &= np.isfinite(vb[i])
        for t in range(time):
            xt, zt, ut = x[b, t], z_out[b, t], u_out[b, t]
            for i in range(n):
                finite &= np.isfinite(xt[i])
                h = vb[i] + (xt[i] - (vb[i] - v_reset)) / tau
                fired = h >= threshold
                ut[i] = alpha * (h - threshold)
                zt[i] = 1.0 if fired else 0.0
                vb[i] = v_reset if fired else h
        if not finite:
            code = BAD_INPUT
    if code != OK:  # name the culprit: the state if it is not finite, else the input
        for b in range(batch):
            for i in range(n):
                if not np.isfinite(v[b, i]):
                    return BAD_STATE
    return code


@njit(cache=True, nogil=True)
def lif_scan_backward(grad_z, grad_v, s, z, tau, alpha, grad_x, grad_v0) -> int:
    """Gradients of the input and of the initial membrane from those of the spikes and of the final membrane.

    ``s = sigmoid(u)`` comes from the caller: a vectorised sigmoid is about three times faster than Numba's
    scalar ``exp``. The membrane's running gradient sits in a local array, not in a view of ``grad_v0``, so
    that the loop over neurons vectorises (four times faster).
    """
    batch, time, n = z.shape
    if (grad_z.shape != z.shape or s.shape != z.shape or grad_x.shape != z.shape
            or grad_v.shape != (batch, n) or grad_v0.shape != (batch, n)):
        return BAD_SHAPE
    one = tau / tau
    gv = np.empty(n, z.dtype)
    for b in range(batch):
        for i in range(n):
            gv[i] = grad_v[b, i]
        for t in range(time - 1, -1, -1):
            gzt, st, zt, gxt = grad_z[b, t], s[b, t], z[b, t], grad_x[b, t]
            for i in range(n):
                gh = gzt[i] * (alpha * st[i] * (one - st[i])) + gv[i] * (one - zt[i])  # no memory gradient if it fired
                gq = gh / tau
                gxt[i] = gq
                gv[i] = gh - gq
        for i in range(n):
            grad_v0[b, i] = gv[i]
    return OK
