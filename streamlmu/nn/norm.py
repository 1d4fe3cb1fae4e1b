"""``FrameBatchNorm``: batch normalisation of the features of every frame, and its folding."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from streamlmu.nn.inference import uses_kernels


class FrameBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the last axis: ``(..., features) -> (..., features)``.

    In training the statistics pool the batch and time axes, as ``BatchNorm1d``
    does on ``(batch, features, time)``; in eval mode it is a per-feature affine
    map, the same for every frame. Without autograd on CPU that map is computed
    as ``x * scale + shift`` (two roundings), the arithmetic the streaming
    engine repeats, so both give the same bits.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and uses_kernels(x, self.weight):
            scale, shift = self._cached_scale_shift(x.dtype)
            return x * scale + shift
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def _cached_scale_shift(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``scale_shift()`` in ``dtype``, recomputed only when the parameters or statistics change."""
        key = (self.version(), dtype)
        cache = self.__dict__.get("_scale_shift_cache")
        if cache is None or cache[0] != key:
            scale, shift = self.scale_shift()
            cache = self.__dict__["_scale_shift_cache"] = (key, scale.to(dtype), shift.to(dtype))
        return cache[1], cache[2]

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` of the eval-mode map ``x * scale + shift``: ``(features,)`` each."""
        with torch.no_grad():
            scale = self.weight / (self.running_var + self.eps).sqrt()
            return scale, self.bias - self.running_mean * scale

    def version(self) -> tuple:
        """Changes whenever the eval-mode map may have changed (for caches of folded weights)."""
        return tuple((t._version, t.data_ptr()) for t in (self.weight, self.bias, self.running_mean, self.running_var))


def fold_batchnorm(weight: Tensor, bias: Tensor | None, bn: FrameBatchNorm) -> tuple[Tensor, Tensor]:
    """One linear map equal to ``bn(x @ weight.T + bias)`` in eval mode.

    weight ``(out, K)``, bias ``(out,)`` or None -> ``(out, K)``, ``(out,)``;
    computed in float64, returned in the weight's dtype.
    """
    if bn.training:
        raise ValueError("BatchNorm folds only in eval mode (its running statistics); call .eval() first")
    scale, shift = (t.detach().double() for t in bn.scale_shift())
    w = weight.detach().double() * scale[:, None]
    b = shift if bias is None else bias.detach().double() * scale + shift
    return w.to(weight.dtype), b.to(weight.dtype)
