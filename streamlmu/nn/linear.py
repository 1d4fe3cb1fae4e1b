"""``FrameLinear``: a dense layer applied to every frame, row-exact in inference."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from streamlmu.kernels import dense
from streamlmu.nn.inference import as_array, uses_kernels
from streamlmu.nn.norm import FrameBatchNorm, fold_batchnorm


def linear_rows(x: Tensor, wT: np.ndarray, b: np.ndarray) -> Tensor:
    """``x @ wT + b`` by the Numba kernel: x ``(..., K)`` -> ``(..., N)``; bit-identical per row."""
    rows = as_array(x.reshape(-1, x.shape[-1]))
    out = np.empty((rows.shape[0], wT.shape[1]), dtype=rows.dtype)
    if dense.linear_rows(rows, wT, b, out) != dense.OK:
        raise ValueError(f"linear layer expects {wT.shape[0]} input features (got {x.shape[-1]})")
    return torch.from_numpy(out).reshape(*x.shape[:-1], wT.shape[1])


class KernelWeights:
    """Transposed NumPy copies of a weight (and bias) for the kernel, refreshed when they change.

    ``weight`` is viewed as ``(out_features, K)``; the copy is ``(K, out_features)``.
    With ``bn`` (eval mode), the copy is the weight with that BatchNorm folded in.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[tuple, np.ndarray, np.ndarray]] = {}

    def get(self, weight: Tensor, bias: Tensor | None, dtype: torch.dtype,
            bn: FrameBatchNorm | None = None) -> tuple[np.ndarray, np.ndarray]:
        key = (weight._version, weight.data_ptr(), None if bias is None else (bias._version, bias.data_ptr()),
               None if bn is None else bn.version())
        np_dtype = np.dtype(str(dtype).removeprefix("torch."))
        slot = (np_dtype, bn is not None)
        hit = self._cache.get(slot)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        w = weight.detach().reshape(weight.shape[0], -1)
        if bn is not None:
            w, bias = fold_batchnorm(w, bias, bn)
        wT = np.ascontiguousarray(w.T.to(dtype).numpy())
        b = np.zeros(w.shape[0], np_dtype) if bias is None else np.ascontiguousarray(bias.detach().to(dtype).numpy())
        self._cache[slot] = (key, wT, b)
        return wT, b

    def __getstate__(self) -> dict:
        return {"_cache": {}}


class FrameLinear(nn.Linear):
    """``nn.Linear`` over the last axis. Shapes: ``(..., in_features) -> (..., out_features)``.

    Without autograd on CPU it runs the row-exact Numba kernel, so one frame
    gives the same bits alone or inside a chunk; otherwise ``F.linear``.
    ``forward(x, bn)`` is ``bn(linear(x))``, with ``bn`` folded into the
    weights when it is in eval mode and the kernel runs.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self._kernel_weights = KernelWeights()

    def forward(self, x: Tensor, bn: FrameBatchNorm | None = None) -> Tensor:
        if uses_kernels(x, self.weight) and (bn is None or not bn.training):
            return linear_rows(x, *self.kernel_weights(x.dtype, bn))
        y = F.linear(x, self.weight, self.bias)
        return y if bn is None else bn(y)

    def kernel_weights(self, dtype: torch.dtype = torch.float32,
                       bn: FrameBatchNorm | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(wT (in, out), b (out,))`` the kernel uses, with ``bn`` folded in if given."""
        return self._kernel_weights.get(self.weight, self.bias, dtype, bn)
