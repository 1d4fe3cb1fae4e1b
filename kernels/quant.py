"""Numba kernels around an int8 dense layer ``out = x @ wT + b`` of a batch of streams.

Each stream's input row gets its own symmetric scale (``max |x| / 127``), so a
stream's result never depends on the other streams in the batch; each output
column of the weight has its own scale (set once, when the program is built).
The int8 product itself is torch's ``_int_mm`` (int32 accumulation, exact).

torch's int8 product is fast only where the CPU has int8 dot-product
instructions (:data:`streamlmu.cpu.INT8_DOT_FLAGS`): on an AVX2-only AMD EPYC
it took 60 times the float32 time of the same ``(256, 256) @ (256, 1024)`` product.

Shapes: ws ``(B, Z)`` float32 workspace; q ``(B, K)`` int8; scales ``(B,)``
float32; acc ``(B, N)`` int32; column_scales, bias ``(N,)`` float32.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_LEVELS = np.float32(127.0)


@njit(cache=True, nogil=True)
def quantize_rows(ws, src, k_in, q, scales) -> None:
    """``q[b] = round(ws[b, src:src + k_in] / scales[b])`` with ``scales[b] = max |row| / 127`` (1 for a zero row).

    The peak is an integer max over the bits without the sign (the order of
    non-negative floats), which vectorises where a float max does not.
    """
    bits, peaks = ws.view(np.int32), scales.view(np.int32)
    magnitude = np.int32(0x7FFFFFFF)
    for b in range(ws.shape[0]):
        row = bits[b, src:src + k_in]
        peak = np.int32(0)
        for i in range(k_in):
            peak = max(peak, row[i] & magnitude)
        peaks[b] = peak
    for b in range(ws.shape[0]):
        scale = scales[b] / _LEVELS if scales[b] > 0 else np.float32(1.0)
        scales[b] = scale
        inverse = np.float32(1.0) / scale
        row, qb = ws[b, src:src + k_in], q[b]
        for i in range(k_in):
            qb[i] = np.int8(np.int32(np.rint(row[i] * inverse)))


@njit(cache=True, nogil=True)
def dequantize_rows(acc, scales, column_scales, bias, ws, dst) -> None:
    """``ws[b, dst:dst + N] = acc[b] * scales[b] * column_scales + bias``."""
    n_out = acc.shape[1]
    for b in range(acc.shape[0]):
        out, ab, scale = ws[b, dst:dst + n_out], acc[b], scales[b]
        for j in range(n_out):
            out[j] = np.float32(ab[j]) * (scale * column_scales[j]) + bias[j]


def quantize_columns(wT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A weight ``(K, N)`` float32 -> ``(int8 (K, N), column scales (N,) float32)``, symmetric per output."""
    peak = np.abs(wT).max(axis=0)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.rint(wT / scales).astype(np.int8), scales
