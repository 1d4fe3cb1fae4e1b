"""An exponential moving average of a model's weights, for evaluation and the saved checkpoints.

After every optimiser step each floating-point tensor of the state dict
(parameters and buffers such as batch-norm statistics) moves towards the
training model's::

    average = d * average + (1 - d) * weights,    d = min(decay, (1 + n) / (10 + n))

with ``n`` the updates so far: the ramp lets the average follow the fast early
changes instead of holding the initial weights for ~1 / (1 - decay) steps.
Integer buffers (step counters) are copied.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s state dict with per-step ``decay`` in (0, 1); ``model`` is a frozen copy."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), e.g. 0.999 (got {decay})")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step towards ``model``'s current weights (same architecture as the average)."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.dtype.is_floating_point:
                average.lerp_(current, 1.0 - d)
            else:
                average.copy_(current)
        self.updates += 1
