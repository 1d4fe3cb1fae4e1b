"""Numba kernel for frame-wise dense layers ``out = x @ wT + b``.

Every output row is accumulated over the inputs in the same fixed order, so a
row's result does not depend on how many rows are computed together: a frame
stepped alone and the same frame inside a chunk give bit-identical outputs
(BLAS picks different kernels for one row and for many). Zero inputs, such as
the silent neurons of a spike train, are skipped, which is exact.

Shapes: x ``(R, K)``, wT ``(K, N)`` (the transposed weight), b ``(N,)``,
out ``(R, N)``. Returns ``OK`` or ``BAD_SHAPE`` (:mod:`streamlmu.kernels.status`); it never allocates.
"""
from __future__ import annotations

from numba import njit

from streamlmu.kernels.status import BAD_SHAPE, OK

_ROWS = 4  # rows sharing one pass over wT (the weights stay in cache)


@njit(cache=True, nogil=True, fastmath={"contract", "arcp", "nsz"})
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
