"""Numba kernels for leaky integrate-and-fire neurons: inference, and training with a surrogate gradient.

Per frame, the same float operations as :func:`streamlmu.nn.lif.lif_step` in
the same order (no fast-math), so the kernels and the torch step agree bit for
bit::

    h = v + (x - (v - v_reset)) / tau;   z = h >= threshold;   v = z ? v_reset : h

Training keeps ``h`` for the backward pass, which runs the chain rule of that
step in reverse time: the spike's gradient is the sigmoid surrogate's,
``alpha s (1 - s)`` with ``s = sigmoid(alpha (h - threshold))``, and the hard
reset passes no gradient (a neuron that fired forgets its ``h``).

Shapes: x, z, h and their gradients ``(B, T, N)``; v, v_out and their
gradients ``(B, N)``; the scalars have the arrays' dtype. Each kernel returns
a code of :mod:`streamlmu.kernels.status`; none allocates.
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
def lif_scan_train(x, v, tau, threshold, v_reset, z_out, h_out, v_out) -> int:
    """The forward scan, also writing each frame's pre-reset potential ``h``; ``v_out`` holds the running membrane.

    A non-finite value is flagged, not branched on, inside the frame loop, so that the loop vectorises
    (three times faster); the checks that name the culprit run only on failure.
    """
    batch, time, n = x.shape
    if v.shape != (batch, n) or z_out.shape != x.shape or h_out.shape != x.shape or v_out.shape != v.shape:
        return BAD_SHAPE
    code = OK
    for b in range(batch):
        vb = v_out[b]
        finite = True
        for i in range(n):
            vb[i] = v[b, i]
            finite &= np.isfinite(vb[i])
        for t in range(time):
            xt, zt, ht = x[b, t], z_out[b, t], h_out[b, t]
            for i in range(n):
                finite &= np.isfinite(xt[i])
                h = vb[i] + (xt[i] - (vb[i] - v_reset)) / tau
                fired = h >= threshold
                ht[i] = h
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
def lif_scan_backward(grad_z, grad_v, h, z, tau, threshold, alpha, grad_x, grad_v0) -> int:
    """Gradients of the input and of the initial membrane from those of the spikes and of the final membrane."""
    batch, time, n = h.shape
    if (grad_z.shape != h.shape or z.shape != h.shape or grad_x.shape != h.shape
            or grad_v.shape != (batch, n) or grad_v0.shape != (batch, n)):
        return BAD_SHAPE
    one = alpha / alpha
    for b in range(batch):
        gv = grad_v0[b]
        for i in range(n):
            gv[i] = grad_v[b, i]
        for t in range(time - 1, -1, -1):
            gzt, ht, zt, gxt = grad_z[b, t], h[b, t], z[b, t], grad_x[b, t]
            for i in range(n):
                s = one / (one + np.exp(-alpha * (ht[i] - threshold)))
                gh = gzt[i] * alpha * s * (one - s)
                if zt[i] == 0.0:  # the membrane kept h
                    gh += gv[i]
                gq = gh / tau
                gxt[i] = gq
                gv[i] = gh - gq
    return OK
