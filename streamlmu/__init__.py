"""streamlmu: streaming-first neuromorphic signal processing.

Every model is a stream operator with explicit state; see :mod:`streamlmu.stream`.
"""
from streamlmu.legendre import delay_weights, discretize, impulse_response, lmu_matrices
from streamlmu.nn import LMUCell, LMUCellState, LMUMemory, LMUMemoryState
from streamlmu.stream import (Map, Pipeline, StreamModule, StreamOperator, load_state, run_chunks,
                              save_state)

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``streamlmu.load_model`` without importing the training and audio stack at ``import streamlmu``.
    if name == "load_model":
        from streamlmu.train.checkpoint import load_model
        return load_model
    raise AttributeError(f"module 'streamlmu' has no attribute {name!r}")

__all__ = [
    "LMUCell", "LMUCellState", "LMUMemory", "LMUMemoryState", "Map", "Pipeline", "StreamModule",
    "StreamOperator", "delay_weights", "discretize", "impulse_response", "lmu_matrices",
    "load_model", "load_state", "run_chunks", "save_state",
]
