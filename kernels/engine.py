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
# erf(a) / a for 0 <= a <= 4 as a degree-16 polynomial in t = a^2 / 8 - 1: a least-squares
# fit to erf at Chebyshev nodes, weighted by a (the error of erf itself), whose coefficients
# were rounded to float32 one at a time from the highest, the others refitted each time.
# Max abs error of erf 2.7e-7; beyond 4, erf is 1 in float32. Unlike libm's erf it vectorises.
_ERF_POLY = np.array((0.35353100299835205, -0.17657619714736938, 0.13167527318000793, -0.10771209746599197,
                      0.09020571410655975, -0.07470270991325378, 0.05991164967417717, -0.04593481495976448,
                      0.03297848254442215, -0.021874547004699707, 0.014459386467933655, -0.009785231202840805,
                      0.004875785205513239, -0.0012928121723234653, 0.0010791898239403963,
                      -0.001311137923039496, 0.00047307065688073635), dtype=np.float32)


@njit(inline="always", cache=True, nogil=True)
def erf32(a):
    """erf in float32; the polynomial ``_ERF_POLY`` by Estrin's scheme (few dependent steps, few ops)."""
    c = _ERF_POLY
    s = min(abs(a), np.float32(4.0))
    t = s * s * np.float32(0.125) - np.float32(1.0)
    t2 = t * t
    t4 = t2 * t2
    t8 = t4 * t4
    q0, q1, q2, q3 = c[0] + c[1] * t, c[2] + c[3] * t, c[4] + c[5] * t, c[6] + c[7] * t
    q4, q5, q6, q7 = c[8] + c[9] * t, c[10] + c[11] * t, c[12] + c[13] * t, c[14] + c[15] * t
    low = (q0 + q1 * t2) + (q2 + q3 * t2) * t4
    high = (q4 + q5 * t2) + (q6 + q7 * t2) * t4
    return np.float32(math.copysign(s * ((low + high * t8) + c[16] * (t8 * t8)), a))


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


@njit(inline="always", cache=True, nogil=True)
def _elementwise(op, ws, s_in, s_out, f_in, W, a1, a2, a3, a4, a5) -> None:
    """One elementwise op for every stream (the op is chosen once, outside the batch loop)."""
    batch = ws.shape[0]
    if op == WINDOW:                         # src, C, dst, state offset, frames kept
        kept = a5 * a2
        for b in range(batch):
            row, old, new = ws[b], s_in[b], s_out[b]
            window = row[a3:a3 + kept + a2]
            _copy(old[a4:a4 + kept], window[:kept])
            _copy(row[a1:a1 + a2], window[kept:])
            _copy(window[a2:], new[a4:a4 + kept])
    elif op == AFFINE:                       # src, N, dst, scale offset, shift offset
        scale, shift = W[a4:a4 + a2], W[a5:a5 + a2]
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            for i in range(a2):
                dst[i] = src[i] * scale[i] + shift[i]
    elif op == RELU:                         # src, N, dst
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            for i in range(a2):
                dst[i] = max(src[i], np.float32(0.0))
    elif op == GELU:                         # src, N, dst
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            for i in range(a2):
                v = src[i]
                dst[i] = v * np.float32(0.5) * (np.float32(1.0) + erf32(v * _SQRT1_2))
    elif op == ADD:                          # src, N, dst, other
        for b in range(batch):
            src, dst, other = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2], ws[b, a4:a4 + a2]
            for i in range(a2):
                dst[i] = src[i] + other[i]
    elif op == COPY:                         # src, N, dst
        for b in range(batch):
            _copy(ws[b, a1:a1 + a2], ws[b, a3:a3 + a2])
    elif op == MASK:                         # src, N, dst, frames before which the input is held at zero
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            if f_in[b] >= a4:
                _copy(src, dst)
            else:
                for i in range(a2):
                    dst[i] = 0.0
    elif op == LIF:                          # src, N, dst, state offset, (tau, threshold, v_reset) offset
        tau, threshold, v_reset = W[a5], W[a5 + 1], W[a5 + 2]
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            v_old, v_new = s_in[b, a4:a4 + a2], s_out[b, a4:a4 + a2]
            for i in range(a2):
                v = v_old[i]
                h = v + (src[i] - (v - v_reset)) / tau
                fired = h >= threshold
                dst[i] = np.float32(1.0) if fired else np.float32(0.0)
                v_new[i] = v_reset if fired else h
    elif op == MEAN:                         # src, N, dst, state offset (N sums, then the count), delay
        for b in range(batch):
            src, dst = ws[b, a1:a1 + a2], ws[b, a3:a3 + a2]
            old, new = s_in[b], s_out[b]
            valid = f_in[b] >= a5
            count = old[a4 + a2] + (np.float32(1.0) if valid else np.float32(0.0))
            new[a4 + a2] = count
            denominator = max(count, np.float32(1.0))
            sums_old, sums_new = old[a4:a4 + a2], new[a4:a4 + a2]
            for i in range(a2):
                total = sums_old[i] + src[i] if valid else sums_old[i]
                sums_new[i] = total
                dst[i] = total / denominator


@njit(cache=True, nogil=True)
def check_frame(x, s_in, f_in, s_out, f_out, ws, y) -> int:
    """``OK``, or the code of what is wrong with the shapes or the state (NaN/Inf)."""
    batch = x.shape[0]
    if not (s_in.shape == s_out.shape and s_in.shape[0] == batch and f_in.shape[0] == batch
            and f_out.shape[0] == batch and ws.shape[0] == batch and y.shape[0] == batch):
        return BAD_SHAPE
    if not _all_finite(s_in):
        return BAD_STATE
    return OK


@njit(cache=True, nogil=True)
def run_ops(prog, first, last, W, x, s_in, f_in, s_out, ws, y, tmp_in, tmp_out, blas) -> int:
    """Ops ``first`` to ``last - 1`` of a frame whose shapes ``check_frame`` passed (``blas``: dense on BLAS)."""
    batch = x.shape[0]
    for p in range(first, last):
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
        elif op == MEMORY:                   # src (one channel), order, dst, state offset, Ad, Bd, Ad.T offsets
            if blas:
                a7 = prog[p, 7]
                _memory_blas(ws, a1, a2, a3, s_in, s_out, a4, W[a7:a7 + a2 * a2].reshape((a2, a2)),
                             W[a6:a6 + a2], tmp_in, tmp_out)
            else:
                Ad, Bd = W[a5:a5 + a2 * a2].reshape((a2, a2)), W[a6:a6 + a2]
                for b in range(batch):
                    m_new = s_out[b, a4:a4 + a2]
                    dense_row(ws[b, a1], s_in[b, a4:a4 + a2], Ad, Bd, m_new)
                    _copy(m_new, ws[b, a3:a3 + a2])
        elif op == INPUT:                    # dst, n
            if x.shape[1] != a2:
                return BAD_SHAPE
            for b in range(batch):
                xb = x[b]
                for i in range(a2):
                    if not np.isfinite(xb[i]):
                        return BAD_INPUT
                _copy(xb, ws[b, a1:a1 + a2])
        elif op == OUTPUT:                   # src, N
            if y.shape[1] != a2:
                return BAD_SHAPE
            for b in range(batch):
                _copy(ws[b, a1:a1 + a2], y[b])
        elif WINDOW <= op <= MEAN:
            _elementwise(op, ws, s_in, s_out, f_in, W, a1, a2, a3, a4, a5)
        else:
            return BAD_SHAPE
    return OK


@njit(cache=True, nogil=True)
def count_frame(f_in, f_out) -> None:
    """``f_out = f_in + 1``: every stream has seen one more frame."""
    for b in range(f_in.shape[0]):
        f_out[b] = f_in[b] + 1


@njit(cache=True, nogil=True)
def run_frame(prog, W, x, s_in, f_in, s_out, f_out, ws, y, tmp_in, tmp_out, blas_min_batch) -> int:
    """The whole program for one frame of every stream."""
    code = check_frame(x, s_in, f_in, s_out, f_out, ws, y)
    if code == OK:
        code = run_ops(prog, 0, prog.shape[0], W, x, s_in, f_in, s_out, ws, y, tmp_in, tmp_out,
                       x.shape[0] >= blas_min_batch)
    if code == OK:
        count_frame(f_in, f_out)
    return code


@njit(cache=True, nogil=True)
def run_frames(prog, W, xs, s_in, f_in, s_out, f_out, s_tmp, f_tmp, ws, ys, tmp_in, tmp_out, blas_min_batch) -> int:
    """``run_frame`` over a chunk: xs ``(T, B, F)`` -> ys ``(T, B, C)``, the state after the last frame in
    ``s_out``/``f_out``; ``s_tmp``/``f_tmp`` (shaped as them) hold the frames between. Stops at the first bad frame."""
    frames = xs.shape[0]
    s_prev, f_prev = s_in, f_in
    for t in range(frames):
        last_is_out = (frames - 1 - t) % 2 == 0  # alternate so that the last frame writes s_out
        s_next, f_next = (s_out, f_out) if last_is_out else (s_tmp, f_tmp)
        code = run_frame(prog, W, xs[t], s_prev, f_prev, s_next, f_next, ws, ys[t], tmp_in, tmp_out, blas_min_batch)
        if code != OK:
            return code
        s_prev, f_prev = s_next, f_next
    return OK
