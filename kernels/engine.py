"""Numba interpreter of a compiled stream model: one call advances a batch of streams one frame.

A *program* is an int64 array ``(ops, 8)``; each row is an op code and its
operands (offsets and sizes). Activations live in a workspace ``ws (B, Z)``,
the streams' state in ``s_in``/``s_out (B, S)`` (read the old, write the new),
the parameters in one flat float32 array ``W``. Built by
:class:`streamlmu.engine.ProgramBuilder`, which documents each op.

The elementwise ops are compiled without fast-math, so they round exactly as
torch does; dense layers call :func:`streamlmu.kernels.dense.linear_row` and
the Legendre update :func:`streamlmu.kernels.legendre.dense_row`, the same
arithmetic as the model's own inference path. From ``blas_min_batch`` streams
on, dense layers use BLAS instead (faster, rounds differently).

Shapes: x ``(B, F)``; s_in, s_out ``(B, S)``; f_in, f_out ``(B,)`` int64
(frames seen); ws ``(B, Z)``; y ``(B, C)``; tmp_in, tmp_out flat float32
scratch of at least ``B * max(K)`` and ``B * max(N)``. Returns a code of
:mod:`streamlmu.kernels.status`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from streamlmu.kernels.dense import linear_row
from streamlmu.kernels.legendre import dense_row
from streamlmu.kernels.status import BAD_INPUT, BAD_SHAPE, BAD_STATE, OK

INPUT, LINEAR, WINDOW, AFFINE, RELU, GELU, ADD, MASK, LIF, MEMORY, COPY, MEAN, OUTPUT = range(13)
_SQRT1_2 = np.float32(1.0 / math.sqrt(2.0))
# erf(a) / a for 0 <= a <= 4 as a Chebyshev series in t = a^2 / 8 - 1 (fitted at
# Chebyshev nodes to math.erf; float32 coefficients). Max abs error of erf ~2.2e-7;
# beyond 4, erf is 1 in float32. Unlike libm's erf it vectorises.
_ERF_COEF = np.array((0.485912948846817, -0.3454078435897827, 0.16182909905910492, -0.07648275792598724,
             0.03466993570327759, -0.014811864122748375, 0.005922937765717506, -0.0022118405904620886,
             0.0007714154198765755, -0.0002515965898055583, 7.688657933613285e-05, -2.206549652328249e-05,
             5.96127392782364e-06, -1.519775082670094e-06, 3.6649305457103765e-07, -8.37899847283552e-08,
             1.8201449236698863e-08), dtype=np.float32)


@njit(inline="always", cache=True, nogil=True)
def erf32(a):
    """erf in float32 by a Clenshaw sum (see ``_ERF_COEF``)."""
    s = min(abs(a), np.float32(4.0))
    t = s * s * np.float32(0.125) - np.float32(1.0)
    t2 = t + t
    b1 = np.float32(0.0)
    b2 = np.float32(0.0)
    for k in range(_ERF_COEF.shape[0] - 1, 0, -1):
        b1, b2 = t2 * b1 - b2 + _ERF_COEF[k], b1
    return np.float32(math.copysign(s * (t * b1 - b2 + _ERF_COEF[0]), a))


@njit(inline="always", cache=True, nogil=True)
def _copy(src, dst) -> None:
    """dst[:] = src for 1-D views (a plain loop: cheaper than slice assignment for short rows)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(inline="always", cache=True, nogil=True)
def _gather(rows, col, width, tmp):
    """``rows[:, col:col + width]`` copied into ``tmp`` as a C-contiguous ``(batch, width)`` block (for BLAS)."""
    block = tmp[:rows.shape[0] * width].reshape((rows.shape[0], width))
    for b in range(rows.shape[0]):
        _copy(rows[b, col:col + width], block[b])
    return block


@njit(cache=True, nogil=True)
def _linear_blas(ws, src, k_in, dst, n_out, wT, bias, tmp_in, tmp_out) -> None:
    batch = ws.shape[0]
    o = tmp_out[:batch * n_out].reshape((batch, n_out))
    np.dot(_gather(ws, src, k_in, tmp_in), wT, o)
    for b in range(batch):
        out, ob = ws[b, dst:dst + n_out], o[b]
        for j in range(n_out):
            out[j] = ob[j] + bias[j]


@njit(cache=True, nogil=True)
def _all_finite(a) -> bool:
    """No NaN/Inf in a C-contiguous float32 array (an integer test on the exponent bits, vectorised)."""
    bits = a.reshape(a.size).view(np.uint32)
    exponent = np.uint32(0x7F800000)
    bad = np.uint32(0)
    for i in range(bits.shape[0]):
        bad += (bits[i] & exponent) == exponent
    return bad == 0


@njit(cache=True, nogil=True)
def _memory_blas(ws, src, order, dst, s_in, s_out, state, AdT, Bd, tmp_in, tmp_out) -> None:
    batch = ws.shape[0]
    o = tmp_out[:batch * order].reshape((batch, order))
    np.dot(_gather(s_in, state, order, tmp_in), AdT, o)
    for b in range(batch):
        u, ob, m_new = ws[b, src], o[b], s_out[b, state:state + order]
        for i in range(order):
            m_new[i] = ob[i] + Bd[i] * u
        _copy(m_new, ws[b, dst:dst + order])


@njit(cache=True, nogil=True)
def run_frame(prog, W, x, s_in, f_in, s_out, f_out, ws, y, tmp_in, tmp_out, blas_min_batch) -> int:
    batch = x.shape[0]
    if not (s_in.shape == s_out.shape and s_in.shape[0] == batch and f_in.shape[0] == batch
            and f_out.shape[0] == batch and ws.shape[0] == batch and y.shape[0] == batch):
        return BAD_SHAPE
    if not _all_finite(s_in):
        return BAD_STATE
    blas = batch >= blas_min_batch
    for p in range(prog.shape[0]):
        op, a1, a2, a3, a4, a5, a6 = prog[p, 0], prog[p, 1], prog[p, 2], prog[p, 3], prog[p, 4], prog[p, 5], prog[p, 6]
        if op == LINEAR:                     # src, K, dst, N, wT offset, bias offset, input is spikes
            wT = W[a5:a5 + a2 * a4].reshape((a2, a4))
            bias = W[a6:a6 + a4]
            if blas:
                _linear_blas(ws, a1, a2, a3, a4, wT, bias, tmp_in, tmp_out)
            else:
                sparse = prog[p, 7] != 0
                for b in range(batch):
                    linear_row(ws[b, a1:a1 + a2], wT, bias, ws[b, a3:a3 + a4], sparse)
            continue
        if op == MEMORY and blas:            # src (one channel), order, dst, state offset, Ad, Bd, Ad.T offsets
            a7 = prog[p, 7]
            _memory_blas(ws, a1, a2, a3, s_in, s_out, a4, W[a7:a7 + a2 * a2].reshape((a2, a2)), W[a6:a6 + a2],
                         tmp_in, tmp_out)
            continue
        if op == INPUT and x.shape[1] != a2:
            return BAD_SHAPE
        if op == OUTPUT and y.shape[1] != a2:
            return BAD_SHAPE
        if op < INPUT or op > OUTPUT:
            return BAD_SHAPE
        for b in range(batch):
            row, old, new = ws[b], s_in[b], s_out[b]
            src = row[a1:a1 + a2]
            if op == INPUT:                  # dst, n
                xb = x[b]
                for i in range(a2):
                    if not np.isfinite(xb[i]):
                        return BAD_INPUT
                _copy(xb, src)
            elif op == WINDOW:               # src, C, dst, state offset, frames kept
                kept = a5 * a2
                window = row[a3:a3 + kept + a2]
                _copy(old[a4:a4 + kept], window[:kept])
                _copy(src, window[kept:])
                _copy(window[a2:], new[a4:a4 + kept])
            elif op == AFFINE:               # src, N, dst, scale offset, shift offset
                dst, scale, shift = row[a3:a3 + a2], W[a4:a4 + a2], W[a5:a5 + a2]
                for i in range(a2):
                    dst[i] = src[i] * scale[i] + shift[i]
            elif op == RELU:                 # src, N, dst
                dst = row[a3:a3 + a2]
                for i in range(a2):
                    dst[i] = max(src[i], np.float32(0.0))
            elif op == GELU:                 # src, N, dst
                dst = row[a3:a3 + a2]
                for i in range(a2):
                    v = src[i]
                    dst[i] = v * np.float32(0.5) * (np.float32(1.0) + erf32(v * _SQRT1_2))
            elif op == ADD:                  # src, N, dst, other
                dst, other = row[a3:a3 + a2], row[a4:a4 + a2]
                for i in range(a2):
                    dst[i] = src[i] + other[i]
            elif op == COPY:                 # src, N, dst
                _copy(src, row[a3:a3 + a2])
            elif op == MASK:                 # src, N, dst, frames before which the input is held at zero
                dst = row[a3:a3 + a2]
                if f_in[b] >= a4:
                    _copy(src, dst)
                else:
                    for i in range(a2):
                        dst[i] = 0.0
            elif op == LIF:                  # src, N, dst, state offset, (tau, threshold, v_reset) offset
                tau, threshold, v_reset = W[a5], W[a5 + 1], W[a5 + 2]
                dst, v_old, v_new = row[a3:a3 + a2], old[a4:a4 + a2], new[a4:a4 + a2]
                for i in range(a2):
                    v = v_old[i]
                    h = v + (src[i] - (v - v_reset)) / tau
                    fired = h >= threshold
                    dst[i] = np.float32(1.0) if fired else np.float32(0.0)
                    v_new[i] = v_reset if fired else h
            elif op == MEMORY:               # src (one channel), order, dst, state offset, Ad, Bd offsets
                m_new = new[a4:a4 + a2]
                dense_row(row[a1], old[a4:a4 + a2], W[a5:a5 + a2 * a2].reshape((a2, a2)), W[a6:a6 + a2], m_new)
                _copy(m_new, row[a3:a3 + a2])
            elif op == MEAN:                 # src, N, dst, state offset (N sums, then the count), delay
                valid = f_in[b] >= a5
                count = old[a4 + a2] + (np.float32(1.0) if valid else np.float32(0.0))
                new[a4 + a2] = count
                denominator = max(count, np.float32(1.0))
                dst, sums_old, sums_new = row[a3:a3 + a2], old[a4:a4 + a2], new[a4:a4 + a2]
                for i in range(a2):
                    total = sums_old[i] + src[i] if valid else sums_old[i]
                    sums_new[i] = total
                    dst[i] = total / denominator
            elif op == OUTPUT:               # src, N
                _copy(src, y[b])
    for b in range(batch):
        f_out[b] = f_in[b] + 1
    return OK
