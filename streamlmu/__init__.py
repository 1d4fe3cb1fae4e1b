"""streamlmu: streaming-first neuromorphic signal processing.

Every model is a stream operator with explicit state; see :mod:`streamlmu.stream`.
"""
from streamlmu.legendre import delay_weights, discretize, impulse_response, lmu_matrices
from streamlmu.nn import LMUCell, LMUCellState, LMUMemory, LMUMemoryState
from streamlmu.stream import (Map, Pipeline, StreamModule, StreamOperator, load_state, run_chunks,
                              save_state)

__version__ = "0.1.0"

__all__ = [
    "LMUCell", "LMUCellState", "LMUMemory", "LMUMemoryState", "Map", "Pipeline", "StreamModule",
    "StreamOperator", "delay_weights", "discretize", "impulse_response", "lmu_matrices",
    "load_state", "run_chunks", "save_state",
]
