"""Numba kernel for frame-wise dense layers ``out = x @ wT + b``.

Every output row is accumulated over the inputs in the same fixed order, so a
row's result does not depend on how many rows are computed together: a frame
stepped alone and the same frame inside a chunk give bit-identical outputs
(BLAS picks different kernels for one row and for many). Zero inputs, such as
the silent neurons of a spike train, are skipped, which is exact.

Shapes: x ``(R, K)``, wT ``(K, N)`` (the transposed weight), b ``(N,)``,
out ``(R, N)``. Returns ``OK`` or ``BAD_SHAPE`` (:mod:`streamlmu.kernels.status`); it never allocates.
``linear_row`` is the same arithmetic for one row ``x (K,) -> out (N,)``, for
other kernels to call.
"""
from __future__ import annotations

from numba import njit

from streamlmu.kernels.status import BAD_SHAPE, OK

_ROWS = 4  # rows sharing one pass over wT (the weights stay in cache)
# Contraction into fused multiply-adds, but no reassociation: the sum over the
# inputs keeps its order, which is what makes rows exact.
_JIT = dict(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})


@njit(**_JIT)
def linear_row(x, wT, b, out, sparse) -> None:
    """One row of :func:`linear_rows` (shapes are the caller's responsibility); same bits.

    ``sparse`` (spike trains, mostly zeros): visit the nonzero inputs only.
    Otherwise four inputs per pass over ``out`` (fewer loads and stores); each
    output still takes its multiply-adds in input order, and a zero input adds
    ``+-0``, which changes no value.
    """
    n_out, k_in = out.shape[0], x.shape[0]
    for j in range(n_out):
        out[j] = b[j]
    k = 0
    if not sparse:
        while k + 4 <= k_in:
            v0, v1, v2, v3 = x[k], x[k + 1], x[k + 2], x[k + 3]
            w0, w1, w2, w3 = wT[k], wT[k + 1], wT[k + 2], wT[k + 3]
            for j in range(n_out):
                o = out[j]
                o += v0 * w0[j]
                o += v1 * w1[j]
                o += v2 * w2[j]
                o += v3 * w3[j]
                out[j] = o
            k += 4
    while k < k_in:
        v = x[k]
        if v != 0.0:
            w = wT[k]
            for j in range(n_out):
                out[j] += v * w[j]
        k += 1


@njit(**_JIT)
def linear_rows(x, wT, b, out) -> int:
    rows, k_in = x.shape
    n_out = wT.shape[1]
    if wT.shape[0] != k_in or b.shape[0] != n_out or out.shape[0] != rows or out.shape[1] != n_out:
        return BAD_SHAPE
    for r0 in range(0, rows, _ROWS):
        r1 = min(r0 + _ROWS, rows)
        for r in range(r0, r1):
            for j in range(n_out):
                out[r, j] = b[j]
        for k in range(k_in):
            w = wT[k]
            for r in range(r0, r1):
                v = x[r, k]
                if v != 0.0:
                    o = out[r]
                    for j in range(n_out):
                        o[j] += v * w[j]
    return OK
