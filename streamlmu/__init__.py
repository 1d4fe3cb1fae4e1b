"""streamlmu: streaming-first neuromorphic signal processing.

Every model is a stream operator with explicit state; see :mod:`streamlmu.stream`.
The names below load on first use, so ``import streamlmu.kernels`` (Numba
kernels over arrays) does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_HOMES = {
    "delay_weights": "streamlmu.legendre", "discretize": "streamlmu.legendre",
    "impulse_response": "streamlmu.legendre", "lmu_matrices": "streamlmu.legendre",
    "LMUCell": "streamlmu.nn", "LMUCellState": "streamlmu.nn", "LMUMemory": "streamlmu.nn",
    "LMUMemoryState": "streamlmu.nn",
    "Map": "streamlmu.stream", "Pipeline": "streamlmu.stream", "StreamModule": "streamlmu.stream",
    "StreamOperator": "streamlmu.stream", "load_state": "streamlmu.stream", "run_chunks": "streamlmu.stream",
    "save_state": "streamlmu.stream",
    "load_model": "streamlmu.audio.bundle",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'streamlmu' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
