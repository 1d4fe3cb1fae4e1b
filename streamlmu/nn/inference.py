"""When a layer may leave torch for its Numba kernel."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from streamlmu.kernels import status
from streamlmu.stream import exporting

KERNEL_DTYPES = (torch.float32, torch.float64)
LOW_PRECISION = (torch.bfloat16, torch.float16)  # what autocast hands layers in mixed-precision training


class _Batched(threading.local):
    depth = 0  # nesting of batched_torch in this thread


_batched = _Batched()


@contextmanager
def batched_torch() -> Iterator[None]:
    """Inside this context layers take torch's batched path (BLAS products, FFT memory) even without autograd.

    The Numba kernels compute each frame row by row, so that a frame gives the
    same bits alone or inside a chunk; whole clips that need no such exactness
    (a distillation teacher, validation during training) run several times
    faster here. Results differ from the kernels' by float rounding only.
    """
    depth = _batched.depth
    _batched.depth = depth + 1
    try:
        yield
    finally:
        _batched.depth = depth


def uses_kernels(x: Tensor, *params: Tensor) -> bool:
    """True on CPU, float32/float64, when no gradient is needed (``no_grad``/``inference_mode``), outside
    :func:`batched_torch` and ONNX export (:func:`streamlmu.stream.exporting`)."""
    if _batched.depth or exporting() or not (x.is_cpu and x.dtype in KERNEL_DTYPES):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False
    return True


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 when it is bfloat16 or float16 (under autocast), else ``x`` itself.

    Layers with state (LIF membranes, the LMU memory) integrate over many frames
    and run in float32 even in mixed-precision training.
    """
    return x.float() if x.dtype in LOW_PRECISION else x


def as_array(x: Tensor) -> np.ndarray:
    """A C-contiguous NumPy view (or copy) of a CPU tensor, detached."""
    return np.ascontiguousarray(x.detach().numpy())


def raise_for_status(code: int, state_name: str) -> None:
    """Turn a kernel's status code into the error a user reads; ``OK`` passes."""
    if code == status.OK:
        return
    if code == status.BAD_INPUT:
        raise ValueError("x contains NaN or Inf; streams accept finite values only")
    if code == status.BAD_STATE:
        raise ValueError(f"{state_name} contains NaN or Inf; pass a state from init_state or an earlier step")
    raise ValueError(f"x, {state_name} and output shapes disagree")
