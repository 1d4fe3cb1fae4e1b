"""The streaming engine: a model compiled into one Numba call per frame for a batch of streams.

``model.streaming()`` (or ``StreamRunner(model)``) snapshots an eval-mode
model into a flat program (:mod:`streamlmu.kernels.engine`): BatchNorm folded
into the layer before it where there is one and a per-channel affine map
otherwise, convolutions as ring buffers in the state, the Legendre update,
LIF neurons and the running-mean head, all over preallocated buffers. The
result is a stream operator for inference only (float32, CPU).

It gives the same per-frame outputs as the model's own ``step``: below
``blas_min_batch`` streams the same bits (dense layers and the Legendre update
call the very kernels the model's inference path uses); from ``blas_min_batch``
on, dense layers run on BLAS, which rounds differently (about 1e-6).

From ``int8_min_batch`` streams on (off by default), the dense layers run as
int8 matrix products (:mod:`streamlmu.kernels.quant`): weights quantized per
output, each stream's input per frame, int32 accumulation. For a large batch
the products take about a fifth of the float32 time (measured on a Zen 4 core),
at a relative error of about 1e-2 in the layers' outputs. A CPU without int8
dot-product instructions runs them far slower than float32 (a warning says so).
The Legendre memory (a recurrence) and layers smaller than ``INT8_MIN_WEIGHTS``
weights stay float32.

Shapes:
    step:    x ``(batch, in_features)`` -> y ``(batch, out_features)``
    forward: x ``(batch, time, in_features)`` -> y ``(batch, time, out_features)``
    state:   ``EngineState(values=(batch, state_size) float32, frames=(batch,) int64)``
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from streamlmu import cpu
from streamlmu.kernels import engine as ops
from streamlmu.kernels import quant
from streamlmu.nn.conv import CausalConv1d
from streamlmu.nn.inference import raise_for_status
from streamlmu.nn.lif import LIF
from streamlmu.nn.linear import FrameLinear
from streamlmu.nn.memory import LMUMemory
from streamlmu.nn.norm import FrameBatchNorm
from streamlmu.stream import StreamModule, check_input, register_state
from streamlmu.warn import warn_caller

DEFAULT_BLAS_MIN_BATCH = 16
INT8_MIN_WEIGHTS = 1024  # smaller dense layers (the LMU encoder) stay float32 in the int8 path
POOLINGS = ("mean", "frame")  # the model's running-mean head, or per-frame logits (see the model's _emit)
_F32, _I64 = np.dtype(np.float32), np.dtype(np.int64)
_new_state = tuple.__new__  # builds a NamedTuple state without its Python-level __new__


class Slot(NamedTuple):
    """A region of the workspace: ``size`` features from ``offset`` (per stream).

    ``spikes``: it holds 0/1 spikes only, so dense layers reading it visit the
    nonzero inputs only.
    """

    offset: int
    size: int
    spikes: bool = False


class Program(NamedTuple):
    """A compiled model: what :func:`streamlmu.kernels.engine.run_frame` runs."""

    ops: np.ndarray          # (n_ops, 8) int64
    weights: np.ndarray      # flat float32
    in_features: int
    out_features: int
    state_size: int
    workspace_size: int
    max_in: int              # widest dense-layer input (BLAS scratch)
    max_out: int             # widest dense-layer output


class ProgramBuilder:
    """Emits the ops of a program; each method returns the slot holding its result.

    Models describe their eval-mode frame with these calls (``_emit``), next to
    their torch ``forward``, so that the two stay side by side.
    """

    def __init__(self) -> None:
        self._ops: list[list[int]] = []
        self._weights: list[np.ndarray] = []
        self._weight_size = 0
        self._workspace = 0
        self._state = 0
        self._in: int | None = None
        self._out: int | None = None
        self._max_in = self._max_out = 1

    # ---------------------------------------------------------- allocation
    def _slot(self, size: int, spikes: bool = False) -> Slot:
        slot = Slot(self._workspace, size, spikes)
        self._workspace += size
        return slot

    def _state_block(self, size: int) -> int:
        offset = self._state
        self._state += size
        return offset

    def _param(self, array: np.ndarray | list[float]) -> int:
        flat = np.ascontiguousarray(array, dtype=np.float32).ravel()
        offset = self._weight_size
        self._weights.append(flat)
        self._weight_size += flat.size
        return offset

    def _op(self, code: int, *args: int) -> None:
        self._ops.append([code, *args] + [0] * (7 - len(args)))

    # ---------------------------------------------------------------- ops
    def input(self, features: int) -> Slot:
        """The frame ``x (in_features,)``; checked for NaN/Inf."""
        self._in = features
        slot = self._slot(features)
        self._op(ops.INPUT, slot.offset, features)
        return slot

    def _dense(self, x: Slot, wT: np.ndarray, b: np.ndarray) -> Slot:
        if wT.shape[0] != x.size:
            raise ValueError(f"dense layer expects {wT.shape[0]} inputs, the slot holds {x.size}")
        out = self._slot(wT.shape[1])
        self._max_in, self._max_out = max(self._max_in, x.size), max(self._max_out, out.size)
        self._op(ops.LINEAR, x.offset, x.size, out.offset, out.size, self._param(wT), self._param(b), int(x.spikes))
        return out

    def linear(self, x: Slot, layer: FrameLinear, bn: FrameBatchNorm | None = None) -> Slot:
        """``bn(layer(x))`` with ``bn`` folded in: the arrays of the layer's own kernel path."""
        return self._dense(x, *layer.kernel_weights(torch.float32, bn))

    def conv(self, x: Slot, conv: CausalConv1d, bn: FrameBatchNorm | None = None) -> Slot:
        """A causal convolution: its last ``kernel_size - 1`` inputs are kept in the state."""
        window = self._window(x, conv.kernel_size - 1)
        return self._dense(window, *conv.kernel_weights(torch.float32, bn))

    def _window(self, x: Slot, frames: int) -> Slot:
        """``[x_{t-frames}, ..., x_t]`` oldest first (``(frames + 1) * size``)."""
        window = self._slot((frames + 1) * x.size, x.spikes)
        self._op(ops.WINDOW, x.offset, x.size, window.offset, self._state_block(frames * x.size), frames)
        return window

    def delay(self, x: Slot, frames: int) -> Slot:
        """``x_{t-frames}`` (zeros before the start)."""
        return x if frames == 0 else Slot(self._window(x, frames).offset, x.size, x.spikes)

    def _elementwise(self, code: int, x: Slot, *args: int, spikes: bool = False) -> Slot:
        out = self._slot(x.size, spikes)
        self._op(code, x.offset, x.size, out.offset, *args)
        return out

    def batchnorm(self, x: Slot, bn: FrameBatchNorm) -> Slot:
        """``x * scale + shift`` with the eval-mode BatchNorm's ``scale_shift()``."""
        scale, shift = (t.detach().float().numpy() for t in bn.scale_shift())
        return self._elementwise(ops.AFFINE, x, self._param(scale), self._param(shift))

    def relu(self, x: Slot) -> Slot:
        return self._elementwise(ops.RELU, x)

    def gelu(self, x: Slot) -> Slot:
        return self._elementwise(ops.GELU, x)

    def add(self, x: Slot, other: Slot) -> Slot:
        if x.size != other.size:
            raise ValueError(f"cannot add slots of {x.size} and {other.size} features")
        return self._elementwise(ops.ADD, x, other.offset)

    def mask(self, x: Slot, delay: int) -> Slot:
        """``x`` held at zero until the stream has seen ``delay`` frames (look-ahead warm-up)."""
        return x if delay == 0 else self._elementwise(ops.MASK, x, delay, spikes=x.spikes)

    def lif(self, x: Slot, lif: LIF) -> Slot:
        """Spikes of LIF neurons; their membranes are in the state."""
        return self._elementwise(ops.LIF, x, self._state_block(x.size), self._param(list(lif.params)), spikes=True)

    def memory(self, u: Slot, memory: LMUMemory) -> Slot:
        """The Legendre memory of a one-channel input: ``(order,)``, also kept in the state."""
        if memory.input_size != 1 or u.size != 1:
            raise ValueError("the engine supports Legendre memories of one channel (memory_d = 1)")
        if memory.discretizer != "zoh":
            raise ValueError("the engine runs the dense (ZOH) Legendre update only")
        Ad, Bd = memory._params[np.dtype(np.float32)]
        out = self._slot(memory.order)
        self._max_in, self._max_out = max(self._max_in, memory.order), max(self._max_out, memory.order)
        self._op(ops.MEMORY, u.offset, memory.order, out.offset, self._state_block(memory.order),
                 self._param(Ad), self._param(Bd), self._param(Ad.T))
        return out

    def concat(self, *parts: Slot) -> Slot:
        out = self._slot(sum(p.size for p in parts), all(p.spikes for p in parts))
        offset = out.offset
        for part in parts:
            self._op(ops.COPY, part.offset, part.size, offset)
            offset += part.size
        return out

    def running_mean(self, x: Slot, delay: int = 0) -> Slot:
        """Mean of ``x`` over the frames seen from ``delay`` on (sums and count in the state)."""
        return self._elementwise(ops.MEAN, x, self._state_block(x.size + 1), delay)

    def output(self, x: Slot) -> None:
        self._out = x.size
        self._op(ops.OUTPUT, x.offset, x.size)

    def finish(self) -> Program:
        if self._in is None or self._out is None:
            raise ValueError("a program needs an input() and an output()")
        weights = np.concatenate(self._weights) if self._weights else np.zeros(0, np.float32)
        return Program(np.asarray(self._ops, dtype=np.int64).reshape(-1, 8), weights, self._in, self._out,
                       self._state, self._workspace, self._max_in, self._max_out)


@register_state
class EngineState(NamedTuple):
    """values: ``(batch, state_size)`` float32 (buffers, memories, membranes, sums); frames: ``(batch,)`` int64."""

    values: Tensor
    frames: Tensor


class StreamRunner(StreamModule):
    """An inference-only stream operator running a compiled model (see the module docstring).

    Args:
        model: an operator with ``_emit(builder)`` (LMUFormer, SpikingLMUFormer);
            put it in eval mode first. The runner keeps a snapshot of its
            weights: build a new one after changing the model.
        blas_min_batch: from this many streams on, dense layers use BLAS
            (None: never; then every batch size matches the model bit for bit).
        pooling: ``"mean"``: the model's own output (the head on the running
            mean of the features since the stream began); ``"frame"``: the
            head on each frame's features, to be averaged over a window by the
            caller (continuous keyword spotting).
        int8_min_batch: from this many streams on, dense layers run as int8
            products (see the module docstring; None: never).

    Not thread-safe: one runner per thread (it reuses its workspace).

    >>> from streamlmu.models import LMUFormer, LMUFormerConfig
    >>> runner = LMUFormer(LMUFormerConfig.preset("tiny")).eval().streaming()
    >>> state = runner.init_state(batch_size=2)
    >>> y, state = runner.step(torch.randn(2, 128), state)
    >>> tuple(y.shape)
    (2, 35)
    """

    def __init__(self, model: StreamModule, blas_min_batch: int | None = DEFAULT_BLAS_MIN_BATCH,
                 pooling: str = "mean", int8_min_batch: int | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} (got {pooling!r})")
        if model.training:
            raise ValueError("StreamRunner runs the eval-mode model; call model.eval() first")
        if not hasattr(model, "_emit"):
            raise TypeError(f"{type(model).__name__} cannot be compiled for the streaming engine")
        builder = ProgramBuilder()
        model._emit(builder, pooling)
        self.pooling = pooling
        self.program = builder.finish()
        self.model_name = type(model).__name__
        self.latency_frames = model.latency_frames
        self.input_frame, self.output_frame = model.input_frame, model.output_frame
        self.blas_min_batch = blas_min_batch if blas_min_batch is not None else np.iinfo(np.int64).max
        self.int8_min_batch = int8_min_batch if int8_min_batch is not None else np.iinfo(np.int64).max
        if int8_min_batch is not None and cpu.cpu_has(cpu.INT8_DOT_FLAGS) is False:
            warn_caller(f"int8 products requested, but this CPU has none of the int8 dot-product instructions "
                        f"{', '.join(cpu.INT8_DOT_FLAGS)}: there they run far slower than float32 (60 times "
                        f"on an AVX2-only CPU); leave int8 off", RuntimeWarning)
        self._int8_layers = self._quantize(self.program)
        self._buffers: dict[int, tuple] = {}
        # [(last returned state, its values and frames as arrays)]: a stream that
        # feeds its state back skips two tensor->array conversions per frame.
        self._last_step: list[tuple] = [(None, None, None)]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_last_step"] = [(None, None, None)]  # caches, not part of the runner
        state["_buffers"] = {}
        return state

    def extra_repr(self) -> str:
        p = self.program
        return (f"{self.model_name} ({self.pooling} pooling): {p.in_features} -> {p.out_features}, {len(p.ops)} ops, "
                f"{p.weights.size:,} weights, state {p.state_size} per stream")

    @staticmethod
    def _quantize(program: Program) -> list[tuple[int, int, int, int, int, Tensor, np.ndarray, np.ndarray]]:
        """(op index, src, K, dst, N, int8 weight ``(K, N)``, its column scales, the bias) of every dense layer the
        int8 path runs, in program order."""
        layers = []
        for index, (code, src, k_in, dst, n_out, w_at, b_at, _) in enumerate(program.ops.tolist()):
            if code == ops.LINEAR and k_in * n_out >= INT8_MIN_WEIGHTS:
                wq, scales = quant.quantize_columns(program.weights[w_at:w_at + k_in * n_out].reshape(k_in, n_out))
                layers.append((index, src, k_in, dst, n_out, torch.from_numpy(wq), scales,
                               program.weights[b_at:b_at + n_out]))
        return layers

    def _run_int8(self, xn: np.ndarray, s_in: np.ndarray, f_in: np.ndarray, s_out: np.ndarray, f_out: np.ndarray,
                  y: np.ndarray, buffers: tuple) -> int:
        """One frame with the int8 dense layers: the float ops between them in Numba, their products in torch."""
        p = self.program
        ws, tmp_in, tmp_out, q_flat, acc_flat, scales = buffers
        code = ops.check_frame(xn, s_in, f_in, s_out, f_out, ws, y)
        if code:
            return code
        blas, first, batch = xn.shape[0] >= self.blas_min_batch, 0, xn.shape[0]
        for index, src, k_in, dst, n_out, weight, column_scales, bias in self._int8_layers:
            code = ops.run_ops(p.ops, first, index, p.weights, xn, s_in, f_in, s_out, ws, y, tmp_in, tmp_out, blas)
            if code:
                return code
            q, acc = q_flat[:batch * k_in].view(batch, k_in), acc_flat[:batch * n_out].view(batch, n_out)
            quant.quantize_rows(ws, src, k_in, q.numpy(), scales)
            torch._int_mm(q, weight, out=acc)
            quant.dequantize_rows(acc.numpy(), scales, column_scales, bias, ws, dst)
            first = index + 1
        code = ops.run_ops(p.ops, first, len(p.ops), p.weights, xn, s_in, f_in, s_out, ws, y, tmp_in, tmp_out, blas)
        if not code:
            ops.count_frame(f_in, f_out)
        return code

    def _workspace(self, batch: int) -> tuple:
        """Per batch size: the workspace, BLAS scratch, and the int8 path's inputs, products and row scales."""
        buffers = self._buffers.get(batch)
        if buffers is None:
            p = self.program
            buffers = (np.zeros((batch, p.workspace_size), np.float32),
                       np.zeros(batch * p.max_in, np.float32), np.zeros(batch * p.max_out, np.float32),
                       torch.zeros(batch * p.max_in, dtype=torch.int8),
                       torch.zeros(batch * p.max_out, dtype=torch.int32), np.zeros(batch, np.float32))
            self._buffers[batch] = buffers
        return buffers

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> EngineState:
        if dtype != torch.float32:
            raise TypeError(f"the streaming engine runs float32 only (got {dtype})")
        return EngineState(torch.zeros(batch_size, self.program.state_size, device=device),
                           torch.zeros(batch_size, dtype=torch.int64, device=device))

    def _check(self, x: Tensor, state: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The NumPy views of a valid input and state; otherwise the error that says what was expected."""
        check_input(x, 2, self.program.in_features)
        if type(state) is not EngineState:
            raise TypeError(f"state must be an EngineState from StreamRunner.init_state (got {type(state).__name__})")
        batch = x.shape[0]
        expected = (batch, self.program.state_size)
        if tuple(state.values.shape) != expected or tuple(state.frames.shape) != (batch,):
            raise ValueError(f"state does not belong to this {self.model_name} engine with batch {batch}: "
                             f"expected values (batch, state_size)={expected} and frames ({batch},), got "
                             f"{tuple(state.values.shape)} and {tuple(state.frames.shape)}")
        if x.dtype != torch.float32 or state.values.dtype != torch.float32 or state.frames.dtype != torch.int64:
            raise TypeError(f"the streaming engine takes float32 frames and an EngineState of float32 values and "
                            f"int64 frames (got {x.dtype}, {state.values.dtype}, {state.frames.dtype})")
        if not (x.is_cpu and state.values.is_cpu and state.frames.is_cpu):
            raise TypeError("the streaming engine runs on CPU tensors")
        return (np.ascontiguousarray(x.detach().numpy()), np.ascontiguousarray(state.values.numpy()),
                np.ascontiguousarray(state.frames.numpy()))

    def step(self, x: Tensor, state: EngineState) -> tuple[Tensor, EngineState]:
        """One frame for every stream: x ``(batch, in_features)`` -> ``(batch, out_features)``."""
        p = self.program
        try:  # hot path: CPU tensors without autograd, every layout as expected
            last = self._last_step[0]
            xn = x.numpy()
            if state is last[0]:  # the state this runner returned last: its arrays are at hand
                s_in, f_in = last[1], last[2]
            else:
                s_in, f_in = state.values.numpy(), state.frames.numpy()
            batch = xn.shape[0]
            fast = (type(state) is EngineState and xn.dtype == _F32 and s_in.dtype == _F32 and f_in.dtype == _I64
                    and xn.ndim == 2 and xn.shape[1] == p.in_features and s_in.shape == (batch, p.state_size)
                    and f_in.shape == (batch,) and xn.flags.c_contiguous and s_in.flags.c_contiguous
                    and f_in.flags.c_contiguous)
        except (AttributeError, TypeError, RuntimeError):
            fast = False
        if not fast:
            xn, s_in, f_in = self._check(x, state)
            batch = xn.shape[0]
        buffers = self._workspace(batch)
        s_out = np.empty_like(s_in)
        f_out = np.empty_like(f_in)
        y = np.empty((batch, p.out_features), _F32)
        if batch >= self.int8_min_batch:
            code = self._run_int8(xn, s_in, f_in, s_out, f_out, y, buffers)
        else:
            code = ops.run_frame(p.ops, p.weights, xn, s_in, f_in, s_out, f_out, buffers[0], y, buffers[1],
                                 buffers[2], self.blas_min_batch)
        if code:
            raise_for_status(code, "state.values")
        new = _new_state(EngineState, (torch.from_numpy(s_out), torch.from_numpy(f_out)))
        self._last_step[0] = (new, s_out, f_out)
        return torch.from_numpy(y), new

    def forward(self, x: Tensor, state: EngineState | None = None) -> tuple[Tensor, EngineState]:
        """A chunk, frame by frame: x ``(batch, time, in_features)`` -> ``(batch, time, out_features)``.

        Float32 chunks run in one kernel call (:func:`run_frames`); the int8 path steps frame by frame."""
        check_input(x, 3, self.program.in_features)
        batch, time = x.shape[0], x.shape[1]
        if state is None:
            state = self.init_state(batch)
        if time == 0:
            return x.new_zeros(batch, 0, self.program.out_features), state
        if batch >= self.int8_min_batch:
            ys = []
            for frame in x.transpose(0, 1).contiguous():  # each (batch, in_features) frame contiguous: the fast path
                y, state = self.step(frame, state)
                ys.append(y)
            return torch.stack(ys, dim=1), state
        _, s_in, f_in = self._check(x[:, 0], state)
        p = self.program
        xs = np.ascontiguousarray(x.detach().numpy().transpose(1, 0, 2))
        ys = np.empty((time, batch, p.out_features), _F32)
        s_out, f_out = np.empty_like(s_in), np.empty_like(f_in)
        buffers = self._workspace(batch)
        code = ops.run_frames(p.ops, p.weights, xs, s_in, f_in, s_out, f_out, np.empty_like(s_in),
                              np.empty_like(f_in), buffers[0], ys, buffers[1], buffers[2], self.blas_min_batch)
        if code:
            raise_for_status(code, "state.values")
        new = _new_state(EngineState, (torch.from_numpy(s_out), torch.from_numpy(f_out)))
        self._last_step[0] = (new, s_out, f_out)
        return torch.from_numpy(ys).transpose(0, 1), new
