"""When a layer may leave torch for its Numba kernel."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

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
