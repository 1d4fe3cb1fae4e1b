"""Torch modules that are stream operators."""
from streamlmu.nn.cell import ACTIVATIONS, LMUCell, LMUCellState, make_activation
from streamlmu.nn.memory import LMUMemory, LMUMemoryState

__all__ = ["ACTIVATIONS", "LMUCell", "LMUCellState", "LMUMemory", "LMUMemoryState", "make_activation"]
