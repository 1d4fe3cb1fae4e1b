"""Cost per frame: multiply-accumulates (MACs) of every layer, and synaptic operations of spiking models.

A dense layer with ``K`` inputs and ``N`` outputs costs ``K * N`` MACs per frame;
a convolution over time ``kernel_size`` times that; a Legendre memory
``channels * (order**2 + order)`` (``Ad m + Bd u``). On neuromorphic hardware a
layer fed by spikes only accumulates the weights of the inputs that fired:
its synaptic operations (SynOps) are its MACs times the input's firing rate.

:class:`LatencyHistogram` keeps compute times of a long run in bounded memory.

A model without recurrent state (the KWT baseline) re-runs on every prefix of
its window, so one frame costs a whole run over the frames heard; such a model
counts that run itself with a ``run_macs(frames)`` method and a
``config.window``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from streamlmu.nn.conv import CausalConv1d
from streamlmu.nn.linear import FrameLinear
from streamlmu.nn.memory import LMUMemory


def _layer_macs(module: nn.Module) -> int | None:
    if isinstance(module, FrameLinear):
        return module.in_features * module.out_features
    if isinstance(module, CausalConv1d):
        return module.kernel_size * module.in_channels * module.out_channels
    if isinstance(module, LMUMemory):
        return module.input_size * (module.order ** 2 + module.order)
    return None


def macs_per_frame(model: nn.Module) -> dict[str, int]:
    """MACs per frame of each layer, keyed by module name (``"convs.0"``, ``"blocks.0.memory"``...).

    For a windowed model (a KWT): the cost of a frame once its window is full.
    """
    if _is_windowed(model):
        return run_macs(model, model.config.window)
    return {name: macs for name, module in model.named_modules() if (macs := _layer_macs(module)) is not None}


def synops_per_frame(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Measured synaptic operations per frame of each layer on input ``x`` ``(batch, time, features)``.

    A dense or convolutional layer counts ``MACs * (fraction of non-zero inputs)``;
    the memory counts its dense ``Ad m`` in full plus ``Bd u`` times the input's rate.
    """
    rates: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if _layer_macs(module) is not None:
            def record(mod, inputs, output, name=name):
                rates[name] = float((inputs[0] != 0).float().mean())
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    ops = {}
    for name, macs in macs_per_frame(model).items():
        module = model.get_submodule(name)
        if isinstance(module, LMUMemory):
            ops[name] = module.input_size * (module.order ** 2 + module.order * rates[name])
        else:
            ops[name] = macs * rates[name]
    return ops


def _is_windowed(model: nn.Module) -> bool:
    return callable(getattr(model, "run_macs", None))


def run_macs(model: nn.Module, frames: int) -> dict[str, int]:
    """MACs of one run of a windowed model (a KWT) over ``frames`` frames, per layer."""
    return model.run_macs(frames)


def mean_run_macs(model: nn.Module, frames: int) -> float:
    """Mean MACs per frame of a windowed model's stream over its first ``frames`` frames (one run per frame)."""
    return float(cumulative_macs(model, frames)[-1]) / frames


def cumulative_macs(model: nn.Module, frames: int) -> np.ndarray:
    """``(frames + 1,)`` int64: entry ``t`` is what a stream has spent on its first ``t`` frames.

    A recurrent model pays the same per frame; a KWT pays one run over the frames heard per frame.
    """
    if _is_windowed(model):
        per_frame = [sum(model.run_macs(t).values()) for t in range(1, frames + 1)]
    else:
        per_frame = [sum(macs_per_frame(model).values())] * frames
    return np.concatenate([[0], np.cumsum(per_frame, dtype=np.int64)])


class LatencyHistogram:
    """Durations in seconds on log-spaced bins (1 ns to 1000 s, 2 % wide): mean, max and quantiles in O(1) memory."""

    _LOW, _BINS_PER_DECADE, _DECADES = 1e-9, 115, 12

    def __init__(self) -> None:
        self.counts = np.zeros(self._BINS_PER_DECADE * self._DECADES + 1, np.int64)
        self.count, self.total, self.max = 0, 0.0, 0.0

    def add(self, seconds: float, times: int = 1) -> None:
        """Record ``times`` durations of ``seconds`` each."""
        position = math.log10(max(seconds, self._LOW) / self._LOW) * self._BINS_PER_DECADE
        self.counts[min(int(position), len(self.counts) - 1)] += times
        self.count += times
        self.total += seconds * times
        self.max = max(self.max, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The upper edge of the bin holding quantile ``q`` (within 2 % above the true value); 0 when empty."""
        if not self.count:
            return 0.0
        index = int(np.searchsorted(np.cumsum(self.counts), q * self.count))
        return min(self._LOW * 10 ** ((index + 1) / self._BINS_PER_DECADE), self.max)
