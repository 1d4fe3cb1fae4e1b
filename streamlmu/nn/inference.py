"""When a layer may leave torch for its Numba kernel."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from streamlmu.kernels import status

KERNEL_DTYPES = (torch.float32, torch.float64)


def uses_kernels(x: Tensor, *params: Tensor) -> bool:
    """True on CPU, float32/float64, when no gradient is needed (``no_grad``/``inference_mode``)."""
    if not (x.is_cpu and x.dtype in KERNEL_DTYPES):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False
    return True


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
