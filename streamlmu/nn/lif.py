"""Leaky integrate-and-fire neurons with the membrane in explicit state.

The neuron of the LMUFormer paper (spikingjelly's LIF: tau 2, threshold 1,
hard reset to 0, sigmoid surrogate gradient with alpha 4)::

    h = v + (x - (v - v_reset)) / tau       # leak towards v_reset, integrate x
    z = H(h - threshold)                     # spike (surrogate gradient in training)
    v = v_reset if z else h                  # hard reset (the reset is not differentiated)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu.kernels import lif as lif_kernels
from streamlmu.nn.inference import KERNEL_DTYPES, as_array, full_precision, raise_for_status, uses_kernels
from streamlmu.stream import StreamModule, check_input, exporting, feature_frame, register_state, step_by_forward

Surrogate = Callable[[Tensor], Tensor]


class LIFParams(NamedTuple):
    tau: float = 2.0
    threshold: float = 1.0
    v_reset: float = 0.0


@register_state
class LIFState(NamedTuple):
    """v: membrane potential ``(batch, features)``."""

    v: Tensor


class SigmoidSpike(torch.autograd.Function):
    """Heaviside step (``x >= 0``) forward; ``alpha * s * (1 - s)``, ``s = sigmoid(alpha x)``, backward."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * s * (1 - s), None


class SigmoidSurrogate:
    """Spike function ``x -> H(x)`` whose gradient is the sigmoid's with slope ``alpha`` (picklable)."""

    def __init__(self, alpha: float = 4.0):
        self.alpha = float(alpha)

    def __call__(self, x: Tensor) -> Tensor:
        return SigmoidSpike.apply(x, self.alpha)

    def __repr__(self) -> str:
        return f"SigmoidSurrogate(alpha={self.alpha})"


class _LIFScan(torch.autograd.Function):
    """The LIF scan with the default sigmoid surrogate as one autograd node (Numba forward and backward)."""

    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor, params: LIFParams, alpha: float) -> tuple[Tensor, Tensor]:
        xn, vn = as_array(x), as_array(v.to(x.dtype))
        z, u, v_out = np.empty_like(xn), np.empty_like(xn), np.empty_like(vn)
        scalars = tuple(xn.dtype.type(s) for s in (*params, alpha))
        raise_for_status(lif_kernels.lif_scan_train(xn, vn, *scalars, z, u, v_out), "state.v")
        z_t, u_t = torch.from_numpy(z), torch.from_numpy(u)
        ctx.save_for_backward(z_t, u_t)
        ctx.params, ctx.alpha = params, alpha
        return z_t, torch.from_numpy(v_out)

    @staticmethod
    def backward(ctx, grad_z: Tensor | None, grad_v: Tensor | None):
        z, u = ctx.saved_tensors
        s = torch.sigmoid(u).numpy()
        gz = as_array(grad_z) if grad_z is not None else np.zeros_like(s)
        gv = as_array(grad_v) if grad_v is not None else np.zeros((s.shape[0], s.shape[2]), s.dtype)
        gx, gv0 = np.empty_like(gz), np.empty_like(gv)
        scalars = (s.dtype.type(ctx.params.tau), s.dtype.type(ctx.alpha))
        raise_for_status(lif_kernels.lif_scan_backward(gz, gv, s, z.numpy(), *scalars, gx, gv0), "gradient")
        return torch.from_numpy(gx), torch.from_numpy(gv0), None, None


def lif_step(x: Tensor, v: Tensor, params: LIFParams = LIFParams(),
             spike: Surrogate = SigmoidSurrogate()) -> tuple[Tensor, Tensor]:
    """One LIF update, a pure function. Shapes: x, v ``(..., features)`` -> (z, v) alike."""
    h = v + (x - (v - params.v_reset)) / params.tau
    z = spike(h - params.threshold)
    return z, torch.where(z.detach() > 0, torch.full_like(h, params.v_reset), h)


class LIF(StreamModule):
    """A layer of LIF neurons as a stream operator.

    Args:
        features: neurons per frame.
        tau, threshold, v_reset: see :class:`LIFParams`.
        surrogate: spike function used in training; default the sigmoid
            surrogate with ``alpha``. snntorch surrogates fit here, e.g.
            ``snntorch.surrogate.sigmoid(slope=4)`` (it fires on ``> 0``, not ``>= 0``).
        alpha: slope of the default surrogate.

    On CPU, ``forward`` runs Numba kernels that perform the same float
    operations as :func:`lif_step` and so give the same spikes: the inference
    scan without autograd, and with autograd and the default surrogate a
    training scan whose backward pass is torch's sigmoid and one Numba loop
    (other surrogates loop over :func:`lif_step`). Under autocast the membrane
    stays float32: bfloat16 or float16 input is widened and the spikes come out float32.

    Shapes:
        step:    x ``(batch, features)`` -> spikes ``(batch, features)`` (0.0 / 1.0)
        forward: x ``(batch, time, features)`` -> spikes ``(batch, time, features)``
        state:   ``LIFState(v=(batch, features))``
    """

    def __init__(self, features: int, tau: float = 2.0, threshold: float = 1.0, v_reset: float = 0.0,
                 surrogate: Surrogate | None = None, alpha: float = 4.0):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive (got {tau})")
        self.features = features
        self.input_frame = self.output_frame = feature_frame(features)
        self.params = LIFParams(float(tau), float(threshold), float(v_reset))
        self.surrogate = surrogate if surrogate is not None else SigmoidSurrogate(alpha)

    def extra_repr(self) -> str:
        p = self.params
        return f"{self.features}, tau={p.tau}, threshold={p.threshold}, v_reset={p.v_reset}"

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LIFState:
        return LIFState(torch.full((batch_size, self.features), self.params.v_reset, dtype=dtype, device=device))

    def _check_state(self, state: object, x: Tensor) -> Tensor:
        if type(state) is not LIFState:
            raise TypeError(f"state must be an LIFState from LIF.init_state (got {type(state).__name__})")
        expected = (x.shape[0], self.features)
        if state.v.shape != expected:
            raise ValueError(f"state.v must have shape (batch, features)={expected} (got {tuple(state.v.shape)})")
        return state.v

    def forward(self, x: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        check_input(x, 3, self.features)
        x = full_precision(x)
        v = self.init_state(x.shape[0], x.dtype, x.device).v if state is None else self._check_state(state, x)
        if uses_kernels(x, v):
            return self._kernel_scan(x, v)
        if x.is_cpu and x.dtype in KERNEL_DTYPES and type(self.surrogate) is SigmoidSurrogate and not exporting():
            z, v = _LIFScan.apply(x, v, self.params, self.surrogate.alpha)
            return z, LIFState(v)
        zs = []
        for t in range(x.shape[1]):
            z, v = lif_step(x[:, t], v, self.params, self.surrogate)
            zs.append(z)
        return torch.stack(zs, dim=1), LIFState(v)

    def _kernel_scan(self, x: Tensor, v: Tensor) -> tuple[Tensor, LIFState]:
        xn, vn = as_array(x), as_array(v.to(x.dtype))
        z, v_out = np.empty_like(xn), np.empty_like(vn)
        scalars = (xn.dtype.type(s) for s in self.params)
        raise_for_status(lif_kernels.lif_scan(xn, vn, *scalars, z, v_out), "state.v")
        return torch.from_numpy(z), LIFState(torch.from_numpy(v_out))

    def step(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        return step_by_forward(self, x, state, self.features)
