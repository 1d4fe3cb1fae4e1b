"""Torch modules that are stream operators."""
from streamlmu.nn.cell import ACTIVATIONS, LMUCell, LMUCellState, make_activation
from streamlmu.nn.conv import BufferState, CausalConv1d, Delay
from streamlmu.nn.lif import LIF, LIFParams, LIFState, SigmoidSurrogate, lif_step
from streamlmu.nn.linear import FrameLinear
from streamlmu.nn.memory import LMUMemory, LMUMemoryState
from streamlmu.nn.norm import FrameBatchNorm

__all__ = ["ACTIVATIONS", "BufferState", "CausalConv1d", "Delay", "FrameBatchNorm", "FrameLinear", "LIF",
           "LIFParams", "LIFState", "LMUCell", "LMUCellState", "LMUMemory", "LMUMemoryState",
           "SigmoidSurrogate", "lif_step", "make_activation"]
