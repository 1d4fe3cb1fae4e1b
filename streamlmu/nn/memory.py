"""``LMUMemory``: a fixed Legendre memory per input channel, as a stream operator."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu import legendre
from streamlmu.kernels import legendre as kernels
from streamlmu.kernels import status
from streamlmu.nn.inference import as_array, full_precision, raise_for_status, uses_kernels
from streamlmu.stream import (Frame, StreamModule, check_finite, check_input, exporting, feature_frame,
                              register_state)

METHODS = ("auto", "fft", "scan")
_new_state = tuple.__new__  # builds a NamedTuple state without its Python-level __new__


@register_state
class LMUMemoryState(NamedTuple):
    """Legendre coefficients of the last ``theta`` frames of each channel.

    m: ``(batch, channels, order)``.
    """

    m: Tensor


class LMUMemory(StreamModule):
    """Independent Legendre memories, one per input channel (``memory_d = input_size``).

    Each channel ``c`` keeps ``m_t[c] = Ad @ m_{t-1}[c] + Bd * x_t[c]``, a
    compressed window of its last ``theta`` frames; ``delay_weights`` decode
    any delay in that window from it. ``Ad, Bd`` are fixed (not trained).

    Args:
        input_size: channels, each with its own memory.
        order: Legendre coefficients per channel.
        theta: window length in frames.
        discretizer: ``"zoh"`` (stable at any order) or ``"euler"`` (O(order)
            step, unstable for large ``order / theta``).
        flatten: return ``(..., channels * order)`` instead of ``(..., channels, order)``.

    Shapes:
        step:    x ``(batch, channels)`` -> y ``(batch, channels, order)``
        forward: x ``(batch, time, channels)`` -> y ``(batch, time, channels, order)``
        state:   ``LMUMemoryState(m=(batch, channels, order))``; y at the last
                 frame equals ``state.m``.

    The output dtype follows the input (float32 or float64; bfloat16 and float16
    input, as autocast hands it, runs and comes out in float32). Without autograd
    on CPU, ``step`` and ``forward`` run Numba kernels; with autograd, ``forward``
    convolves with the impulse response by FFT (``method="fft"``) or loops the
    torch step (``method="scan"``).

    >>> mem = LMUMemory(input_size=2, order=8, theta=10.0)
    >>> y, state = mem(torch.randn(1, 5, 2))
    >>> tuple(y.shape), tuple(state.m.shape)
    ((1, 5, 2, 8), (1, 2, 8))
    """

    def __init__(self, input_size: int, order: int, theta: float, discretizer: str = "zoh",
                 flatten: bool = False):
        super().__init__()
        if not isinstance(input_size, int) or input_size < 1:
            raise ValueError(f"input_size must be a positive integer (got {input_size!r})")
        if discretizer not in legendre.DISCRETIZERS:
            raise ValueError(f"discretizer must be one of {legendre.DISCRETIZERS} (got {discretizer!r})")
        self.input_size = input_size
        self.order = order
        self.input_frame = feature_frame(input_size)
        self.theta = float(theta)
        self.discretizer = discretizer
        self.flatten = flatten
        self.output_frame = (feature_frame(input_size * order) if flatten
                             else Frame((input_size, order), ("channels", "order")))
        A, B = legendre.lmu_matrices(order)
        self._Ad64, self._Bd64 = legendre.discretize(A, B, self.theta, discretizer)
        # Kernel parameters per NumPy dtype: (Ad, Bd) for the dense kernels,
        # (coef,) for the O(order) Euler ones.
        if discretizer == "euler":
            self._kernels = (kernels.lmu_euler_step, kernels.lmu_euler_scan)
            params64: tuple[np.ndarray, ...] = (legendre.euler_coefficients(order, self.theta),)
        else:
            self._kernels = (kernels.lmu_step, kernels.lmu_scan)
            params64 = (self._Ad64, self._Bd64)
        self._params = {np.dtype(dt): tuple(np.ascontiguousarray(p, dtype=dt) for p in params64)
                        for dt in (np.float32, np.float64)}
        # [(last output of step, its NumPy view)]: a stream that feeds its state
        # back skips one tensor->array conversion per frame. A list, so that
        # the hot path replaces its item without nn.Module.__setattr__.
        self._last_step: list[tuple[Tensor | None, np.ndarray | None]] = [(None, None)]
        # Computed on first use by the FFT path: impulse response and powers of Ad.
        self._impulse64 = np.zeros((0, order))
        self._powers64: list[np.ndarray] = [self._Ad64]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_last_step"] = [(None, None)]  # a cache, not part of the module
        return state

    # ----------------------------------------------------------------- helpers
    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, order={self.order}, theta={self.theta}, "
                f"discretizer={self.discretizer!r}, flatten={self.flatten}")

    def matrices(self, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """The discrete ``(Ad, Bd)`` as tensors: ``(order, order)``, ``(order,)``."""
        return (torch.as_tensor(self._Ad64, dtype=dtype, device=device),
                torch.as_tensor(self._Bd64, dtype=dtype, device=device))

    def impulse_response(self, length: int, dtype: torch.dtype = torch.float64,
                         device: torch.device | str | None = None) -> Tensor:
        """``H[t] = Ad**t Bd`` for ``t < length``: ``(length, order)``."""
        if self._impulse64.shape[0] < length:
            self._impulse64 = legendre.impulse_response(self._Ad64, self._Bd64, max(length, 2 * self._impulse64.shape[0]))
        return torch.as_tensor(self._impulse64[:length], dtype=dtype, device=device)

    def _power(self, k: int) -> np.ndarray:
        """``Ad ** (2 ** k)`` in float64, by repeated squaring."""
        while len(self._powers64) <= k:
            self._powers64.append(self._powers64[-1] @ self._powers64[-1])
        return self._powers64[k]

    def _check_state(self, state: object, batch: int, x: Tensor) -> Tensor:
        if type(state) is not LMUMemoryState:
            raise TypeError(f"state must be an LMUMemoryState from LMUMemory.init_state "
                            f"(got {type(state).__name__})")
        m = state.m
        expected = (batch, self.input_size, self.order)
        if m.shape != expected:
            raise ValueError(f"state.m must have shape (batch, channels, order)={expected} "
                             f"(got {tuple(m.shape)})")
        if m.dtype != x.dtype or m.device != x.device:
            raise TypeError(f"state.m must match the input's dtype and device "
                            f"({x.dtype}, {x.device}); got ({m.dtype}, {m.device})")
        return m

    def _run_kernel(self, scan: bool, xn: np.ndarray, mn: np.ndarray, out: np.ndarray) -> None:
        """Call the step or scan kernel; raise on a bad status (``out`` is then garbage)."""
        raise_for_status(self._kernels[scan](xn, mn, *self._params[mn.dtype], out), "state.m")

    def _output(self, m: Tensor) -> Tensor:
        return m.flatten(-2) if self.flatten else m

    @staticmethod
    def _torch_update(x: Tensor, m: Tensor, Ad: Tensor, Bd: Tensor) -> Tensor:
        """``Ad @ m + Bd * x`` per channel: x ``(B, C)``, m ``(B, C, N)`` -> ``(B, C, N)``."""
        return m @ Ad.T + x.unsqueeze(-1) * Bd

    # ------------------------------------------------------------------- API
    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> LMUMemoryState:
        return LMUMemoryState(torch.zeros(batch_size, self.input_size, self.order, dtype=dtype, device=device))

    def step(self, x: Tensor, state: LMUMemoryState) -> tuple[Tensor, LMUMemoryState]:
        """Advance one frame. Shapes: x ``(batch, channels)`` -> ``(batch, channels, order)``."""
        # Per-frame hot path (CPU, float32/64, no autograd): validate on the
        # NumPy views; anything unusual (a GPU tensor, a tensor that needs its
        # gradient, a wrong shape or dtype) goes to the checked path below.
        if type(state) is LMUMemoryState and not exporting():
            m = state.m
            last = self._last_step[0]
            try:
                xn = x.numpy()
                mn = last[1] if m is last[0] else m.numpy()
            except (AttributeError, TypeError, RuntimeError):
                xn = None
            if xn is not None:
                params = self._params.get(xn.dtype)
                if params is not None and mn.dtype is xn.dtype and xn.ndim == 2 and mn.ndim == 3 \
                        and xn.shape[1] == self.input_size:
                    out = np.empty(mn.shape, mn.dtype)
                    code = self._kernels[0](xn, mn, *params, out)  # also checks the other shapes
                    if code == status.OK:
                        new = torch.from_numpy(out)
                        self._last_step[0] = (new, out)
                        return (new.flatten(-2) if self.flatten else new), _new_state(LMUMemoryState, (new,))
                    if code != status.BAD_SHAPE:  # a bad shape gets the detailed checks below
                        raise_for_status(code, "state.m")
        return self._checked_step(x, state)

    def _checked_step(self, x: Tensor, state: LMUMemoryState) -> tuple[Tensor, LMUMemoryState]:
        check_input(x, 2, self.input_size)
        m = self._check_state(state, x.shape[0], x)
        if uses_kernels(x, m):  # tensors that track gradients, under no_grad
            xn, mn = x.detach().numpy(), m.detach().numpy()
            out = np.empty(mn.shape, dtype=mn.dtype)
            self._run_kernel(False, xn, mn, out)
            new = torch.from_numpy(out)
        else:
            check_finite(x)
            check_finite(m, "state.m")
            Ad, Bd = self.matrices(x.dtype, x.device)
            new = self._torch_update(x, m, Ad, Bd)
        return self._output(new), LMUMemoryState(new)

    def forward(self, x: Tensor, state: LMUMemoryState | None = None,
                method: str = "auto") -> tuple[Tensor, LMUMemoryState]:
        """Run a chunk. Shapes: x ``(batch, time, channels)`` -> ``(batch, time, channels, order)``.

        ``method``: ``"auto"`` (Numba scan without autograd on CPU, else FFT),
        ``"fft"`` or ``"scan"``.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} (got {method!r})")
        check_input(x, 3, self.input_size)
        x = full_precision(x)
        batch, time = x.shape[0], x.shape[1]
        if state is None:
            state = self.init_state(batch, dtype=x.dtype, device=x.device)
        m0 = self._check_state(state, batch, x)
        if time == 0:
            return self._output(x.new_zeros(batch, 0, self.input_size, self.order)), state
        kernel_ok = uses_kernels(x, m0)
        if method == "fft" or (method == "auto" and not kernel_ok and not exporting()):
            check_finite(x)
            check_finite(m0, "state.m")
            ms = self._fft(x, m0)
        elif kernel_ok:
            ms = self._kernel_scan(x, m0)
        else:
            check_finite(x)
            ms = self._torch_scan(x, m0)
        return self._output(ms), LMUMemoryState(ms[:, -1])

    # --------------------------------------------------------- forward paths
    def _kernel_scan(self, x: Tensor, m0: Tensor) -> Tensor:
        batch, time = x.shape[0], x.shape[1]
        out = torch.empty(batch, time, self.input_size, self.order, dtype=x.dtype)
        self._run_kernel(True, as_array(x), as_array(m0), out.numpy())
        return out

    def _torch_scan(self, x: Tensor, m0: Tensor) -> Tensor:
        Ad, Bd = self.matrices(x.dtype, x.device)
        m, ms = m0, []
        for t in range(x.shape[1]):
            m = self._torch_update(x[:, t], m, Ad, Bd)
            ms.append(m)
        return torch.stack(ms, dim=1)

    def _fft(self, x: Tensor, m0: Tensor) -> Tensor:
        """Zero-state response by FFT convolution plus the free response of ``m0``."""
        time = x.shape[1]
        n_fft = 2 * time
        H = self.impulse_response(time, dtype=x.dtype, device=x.device)           # (T, N)
        U = torch.fft.rfft(x, n=n_fft, dim=1)                                      # (B, F, C)
        Hf = torch.fft.rfft(H, n=n_fft, dim=0)                                     # (F, N)
        ms = torch.fft.irfft(U.unsqueeze(-1) * Hf[:, None, :], n=n_fft, dim=1)[:, :time]
        if bool((m0 != 0).any()) or m0.requires_grad:
            ms = ms + self._free_response(m0, time)
        return ms

    def _free_response(self, m0: Tensor, time: int) -> Tensor:
        """``Ad**(t+1) @ m0`` for ``t < time`` by doubling: ``(B, T, C, N)``."""
        resp = (m0 @ torch.as_tensor(self._Ad64, dtype=m0.dtype, device=m0.device).T).unsqueeze(1)
        k = 0
        while resp.shape[1] < time:
            P = torch.as_tensor(self._power(k), dtype=m0.dtype, device=m0.device)
            resp = torch.cat([resp, resp @ P.T], dim=1)
            k += 1
        return resp[:, :time]
