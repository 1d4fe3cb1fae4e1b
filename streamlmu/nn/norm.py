"""``FrameBatchNorm``: batch normalisation of the features of every frame."""
from __future__ import annotations

from torch import Tensor, nn


class FrameBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the last axis: ``(..., features) -> (..., features)``.

    In training the statistics pool the batch and time axes, as ``BatchNorm1d``
    does on ``(batch, features, time)``; in eval mode it is a per-feature affine
    map, the same for every frame.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def affine(self) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` of the eval-mode map ``x * scale + shift``: ``(features,)`` each."""
        scale = self.weight / (self.running_var + self.eps).sqrt()
        return scale, self.bias - self.running_mean * scale
