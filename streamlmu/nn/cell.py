"""``LMUCell``: the Legendre Memory Unit cell (Voelker et al. 2019, keras-lmu sense)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from streamlmu.nn.memory import LMUMemory, LMUMemoryState
from streamlmu.stream import StreamModule, check_input, feature_frame, register_state

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
}


def make_activation(activation: str | nn.Module | None) -> nn.Module:
    """An activation module from a name in ``ACTIVATIONS``, a module, or None (identity)."""
    if activation is None:
        return nn.Identity()
    if isinstance(activation, nn.Module):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, an nn.Module or None "
                         f"(got {activation!r})")
    return ACTIVATIONS[activation]()


@register_state
class LMUCellState(NamedTuple):
    """m: Legendre memory ``(batch, memory_d, order)``; h: hidden ``(batch, hidden_size)``."""

    m: Tensor
    h: Tensor


class LMUCell(StreamModule):
    """LMU cell: a linear Legendre memory feeding a nonlinear hidden layer.

    Per frame::

        u_t = memory_activation(We x_t [+ Wh h_{t-1}] [+ Wm m_{t-1}] + b_u)   # (memory_d,)
        m_t = Ad m_{t-1} + Bd u_t                                           # per memory channel
        h_t = hidden_activation(W [m_t; x_t] + b_h)

    The bracketed terms are the ``hidden_to_memory`` and ``memory_to_memory``
    switches; ``input_to_hidden`` adds ``x_t`` to the hidden layer's input.
    Without recurrence into the memory, ``forward`` runs the memory in parallel
    (FFT when training, Numba scan in inference); with it, a frame loop.

    Args:
        input_size: features per frame.
        hidden_size: output features per frame.
        memory_d: memory channels (encoders map the input onto them).
        order, theta, discretizer: of the Legendre memory, see :class:`LMUMemory`.
        hidden_to_memory, memory_to_memory, input_to_hidden: the switches above.
        hidden_activation, memory_activation: names in ``ACTIVATIONS`` or modules.
        bias: biases on the encoder and the hidden layer.

    Shapes:
        step:    x ``(batch, input_size)`` -> h ``(batch, hidden_size)``
        forward: x ``(batch, time, input_size)`` -> h ``(batch, time, hidden_size)``
        state:   ``LMUCellState(m=(batch, memory_d, order), h=(batch, hidden_size))``

    >>> cell = LMUCell(input_size=3, hidden_size=4, memory_d=1, order=8, theta=10.0)
    >>> h, state = cell(torch.randn(2, 7, 3))
    >>> tuple(h.shape), tuple(state.m.shape)
    ((2, 7, 4), (2, 1, 8))
    """

    def __init__(self, input_size: int, hidden_size: int, memory_d: int = 1, order: int = 256,
                 theta: float = 128.0, discretizer: str = "zoh", hidden_to_memory: bool = False,
                 memory_to_memory: bool = False, input_to_hidden: bool = True,
                 hidden_activation: str | nn.Module | None = "tanh",
                 memory_activation: str | nn.Module | None = None, bias: bool = True):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("memory_d", memory_d)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer (got {value!r})")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.input_frame, self.output_frame = feature_frame(input_size), feature_frame(hidden_size)
        self.memory_d = memory_d
        self.hidden_to_memory = hidden_to_memory
        self.memory_to_memory = memory_to_memory
        self.input_to_hidden = input_to_hidden
        self.memory = LMUMemory(memory_d, order, theta, discretizer)
        self.input_encoder = nn.Linear(input_size, memory_d, bias=bias)
        self.hidden_encoder = nn.Linear(hidden_size, memory_d, bias=False) if hidden_to_memory else None
        self.memory_encoder = nn.Linear(memory_d * order, memory_d, bias=False) if memory_to_memory else None
        hidden_in = memory_d * order + (input_size if input_to_hidden else 0)
        self.hidden = nn.Linear(hidden_in, hidden_size, bias=bias)
        self.hidden_activation = make_activation(hidden_activation)
        self.memory_activation = make_activation(memory_activation)

    @property
    def parallel(self) -> bool:
        """True when nothing feeds back into the memory, so ``forward`` is parallel."""
        return not (self.hidden_to_memory or self.memory_to_memory)

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LMUCellState:
        m = self.memory.init_state(batch_size, dtype=dtype, device=device).m
        return LMUCellState(m, torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device))

    def _check_state(self, state: object, batch: int) -> LMUCellState:
        if type(state) is not LMUCellState:
            raise TypeError(f"state must be an LMUCellState from LMUCell.init_state (got {type(state).__name__})")
        if state.h.shape != (batch, self.hidden_size):
            raise ValueError(f"state.h must have shape (batch, hidden_size)=({batch}, {self.hidden_size}) "
                             f"(got {tuple(state.h.shape)})")
        return state

    def _encode(self, x: Tensor, state: LMUCellState) -> Tensor:
        u = self.input_encoder(x)
        if self.hidden_encoder is not None:
            u = u + self.hidden_encoder(state.h)
        if self.memory_encoder is not None:
            u = u + self.memory_encoder(state.m.flatten(-2))
        return self.memory_activation(u)

    def _hidden(self, m: Tensor, x: Tensor) -> Tensor:
        z = torch.cat([m.flatten(-2), x], dim=-1) if self.input_to_hidden else m.flatten(-2)
        return self.hidden_activation(self.hidden(z))

    def step(self, x: Tensor, state: LMUCellState) -> tuple[Tensor, LMUCellState]:
        """Advance one frame. Shapes: x ``(batch, input_size)`` -> h ``(batch, hidden_size)``."""
        check_input(x, 2, self.input_size)
        state = self._check_state(state, x.shape[0])
        m, _ = self.memory.step(self._encode(x, state), LMUMemoryState(state.m))
        h = self._hidden(m, x)
        return h, LMUCellState(m, h)

    def forward(self, x: Tensor, state: LMUCellState | None = None,
                method: str = "auto") -> tuple[Tensor, LMUCellState]:
        """Run a chunk. Shapes: x ``(batch, time, input_size)`` -> h ``(batch, time, hidden_size)``.

        ``method`` selects the memory's path (see :meth:`LMUMemory.forward`).
        """
        check_input(x, 3, self.input_size)
        batch = x.shape[0]
        state = self._check_state(self.init_state(batch, x.dtype, x.device) if state is None else state, batch)
        if x.shape[1] == 0:
            return x.new_zeros(batch, 0, self.hidden_size), state
        if not self.parallel:
            hs = []
            for t in range(x.shape[1]):
                h, state = self.step(x[:, t], state)
                hs.append(h)
            return torch.stack(hs, dim=1), state
        u = self.memory_activation(self.input_encoder(x))
        ms, mem_state = self.memory(u, LMUMemoryState(state.m), method=method)
        hs = self._hidden(ms, x)
        return hs, LMUCellState(mem_state.m, hs[:, -1])
