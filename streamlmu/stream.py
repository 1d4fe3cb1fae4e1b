"""The stream operator contract, pipelines and state input/output.

A stream operator maps a sequence to a sequence frame by frame with *explicit*
state::

    state = op.init_state(batch_size=1)
    y_t, state = op.step(x_t, state)        # x_t: (batch, *frame)
    y, state = op.forward(x, state=None)    # x:   (batch, time, *frame)
    state = op.reset(state, mask)           # mask: (batch,) bool

A frame is whatever one time step carries: an audio sample ``()``, a feature
vector ``(features,)``, an image ``(3, H, W)``. Each operator declares the
:class:`Frame` it takes (``input_frame``) and gives (``output_frame``).

``forward`` on any split of a sequence into chunks equals ``forward`` on the
whole and equals one ``step`` per frame. An operator that changes the frame
rate (``changes_rate``: a resampler, a filterbank with a hop, a detector that
emits only events) turns ``k`` input frames into ``n >= 0`` output frames; its
``step`` returns the ``(batch, n, *frame)`` frames that one input frame
completed, and chunked ``forward`` still yields the same output sequence.

State is a pytree: tensors in tuples, NamedTuples, lists and dicts (``None``
allowed), every tensor with the batch first. It never lives in an attribute,
so any number of independent streams can share one operator. Outputs may be
structured the same way (a NamedTuple of padded tensors with a count per
frame), joined along time leaf by leaf.

``latency_frames`` is the look-ahead in the operator's output frames;
``latency_s`` the longest wait, in seconds, from an input's arrival to the
first output that depends on it, where the rate is known (else ``None``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

State = Any  # a tensor, None, or a tuple, NamedTuple, list or dict of states


class Frame(NamedTuple):
    """The layout of one frame: ``shape`` without batch and time (``None``: any size), a ``name`` per
    dimension, the ``dtype`` kinds taken (``"float"``, ``"uint8"`` or ``"float|uint8"``) and what the
    time axis counts."""

    shape: tuple[int | None, ...] = (None,)
    names: tuple[str, ...] = ("features",)
    dtype: str = "float"
    time: str = "time"

    def layout(self, time: bool = True) -> str:
        """``"(batch, time, features=128)"`` and the like."""
        dims = [f"{n}={d}" if d is not None else n for n, d in zip(self.names, self.shape)]
        kind = "" if self.dtype == "float" else f" {self.dtype}"
        return "(" + ", ".join(["batch"] + ([self.time] if time else []) + dims) + ")" + kind

    def check(self, x: Any, time: bool = True, name: str = "x") -> None:
        """Raise ``TypeError``/``ValueError`` naming this layout unless ``x`` fits it (with a time axis if ``time``)."""
        layout = self.layout(time)
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {layout} (got {type(x).__name__})")
        kinds = self.dtype.split("|")
        if not (("float" in kinds and x.is_floating_point()) or ("uint8" in kinds and x.dtype == torch.uint8)):
            what = " or ".join("floating-point" if k == "float" else k for k in kinds)
            raise TypeError(f"{name} must be a {what} tensor of shape {layout} (got dtype {x.dtype})")
        lead = 2 if time else 1
        if x.dim() != lead + len(self.shape) or any(
                want is not None and got != want for want, got in zip(self.shape, x.shape[lead:])):
            raise ValueError(f"{name} must have shape {layout} (got {tuple(x.shape)})")


def feature_frame(features: int | None = None) -> Frame:
    """A feature vector of ``features`` values (any number if None)."""
    return Frame((features,))


SAMPLES = Frame((), (), "float", "samples")  # audio: one float sample in [-1, 1] per step
IMAGES = Frame((3, None, None), ("channels", "height", "width"), "float|uint8")


@runtime_checkable
class StreamOperator(Protocol):
    """What every operator provides; see the module docstring."""

    latency_frames: int

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State: ...

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]: ...

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]: ...

    def reset(self, state: State, mask: Tensor) -> State: ...


def register_state(cls: type) -> type:
    """Class decorator: allow a state record in ``torch.load(weights_only=True)``.

    With it, ``torch.save(state, f)`` / ``torch.load(f)`` round-trips a state
    without unsafe unpickling.
    """
    torch.serialization.add_safe_globals([cls])
    return cls


_TREE = "a tensor, None, or a tuple, NamedTuple, list or dict of those"


def tree_map(fn: Callable[..., Tensor], tree: State, *others: State) -> State:
    """Apply ``fn`` leaf-wise over the tensors of ``tree`` (and the matching leaves of ``others``); None stays None."""
    return tree_map_paths(lambda _, *leaves: fn(*leaves), tree, *others)


def tree_map_paths(fn: Callable[..., Tensor], tree: State, *others: State, prefix: tuple = ()) -> State:
    """:func:`tree_map` with each leaf's path (field names, dict keys, indices) as ``fn``'s first argument."""
    if isinstance(tree, Tensor):
        return fn(prefix, tree, *others)
    if tree is None:
        return None
    if isinstance(tree, dict):
        return type(tree)((k, tree_map_paths(fn, v, *(o[k] for o in others), prefix=prefix + (k,)))
                          for k, v in tree.items())
    if isinstance(tree, (tuple, list)):
        keys = tree._fields if hasattr(tree, "_fields") else range(len(tree))
        parts = [tree_map_paths(fn, *leaves, prefix=prefix + (k,)) for k, *leaves in zip(keys, tree, *others)]
        return type(tree)(*parts) if hasattr(tree, "_fields") else type(tree)(parts)
    raise TypeError(f"a state or output must be {_TREE} (got {type(tree).__name__})")


def tree_paths(tree: State, prefix: tuple = ()) -> list[tuple[tuple, Tensor]]:
    """``(path, tensor)`` for every tensor, depth first; a path holds field names, dict keys and indices."""
    if isinstance(tree, Tensor):
        return [(prefix, tree)]
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in tree_paths(v, prefix + (k,))]
    if isinstance(tree, (tuple, list)):
        keys = tree._fields if hasattr(tree, "_fields") else range(len(tree))
        return [p for k, v in zip(keys, tree) for p in tree_paths(v, prefix + (k,))]
    raise TypeError(f"a state or output must be {_TREE} (got {type(tree).__name__})")


def tree_leaves(tree: State) -> list[Tensor]:
    """The tensors of a state, depth first."""
    return [leaf for _, leaf in tree_paths(tree)]


def check_input(x: Any, rank: int, features: int | None, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is float feature frames: rank 2 ``(batch, features)`` (one frame)
    or 3 ``(batch, time, features)``; ``features=None`` skips the size check."""
    feature_frame(features).check(x, time=rank == 3, name=name)


_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def exporting() -> bool:
    """True while ``torch.onnx.export`` traces a model: layers then take their torch path (a Numba call would be
    frozen into the graph as a constant) and skip checks of values (:func:`check_finite`)."""
    return torch.jit.is_tracing() and torch.onnx.is_in_onnx_export()  # the first is cheap on every frame


def check_finite(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` holds a NaN or an infinity (not while exporting: a check of values cannot be
    part of the graph)."""
    if exporting():
        return
    if x.device.type == "cpu" and x.dtype in _NUMPY_FLOATS:  # NumPy's check is ~10x faster than torch's
        finite = bool(np.isfinite(x.detach().numpy()).all())
    else:
        finite = bool(torch.isfinite(x).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or Inf; streams accept finite values only")


def step_by_forward(op: "StreamModule", x: Any, state: State, features: int | None = None) -> tuple[Any, State]:
    """A ``step`` that is ``forward`` on a one-frame chunk: x ``(batch, *frame)`` -> ``(batch, *frame)``, or the
    ``(batch, n, *frame)`` frames it completed when ``op`` changes the rate.

    For operators whose chunk path is already exact per frame, so the two
    cannot drift apart. ``features`` checks feature frames of that size;
    otherwise ``op.input_frame`` is checked.
    """
    if isinstance(x, Tensor) or features is not None:  # structured frames are checked by forward
        (feature_frame(features) if features is not None else op.input_frame).check(x, time=False)
    y, state = op.forward(tree_map(lambda t: t.unsqueeze(1), x), state)
    return (y if op.changes_rate else tree_map(lambda t: t[:, 0], y)), state


def forward_by_steps(op: "StreamModule", x: Tensor, state: State) -> tuple[Any, State]:
    """A ``forward`` that runs ``op.step`` on each frame of a chunk: ``(batch, time, *frame)`` -> the outputs
    stacked on a time axis; for operators whose step is their primitive (a runtime, a wrapper). A chunk of no
    frames gives ``(batch, 0, *output frame)`` where that frame has a fixed shape."""
    ys = []
    for t in range(x.shape[1]):
        y, state = op.step(x[:, t], state)
        ys.append(y)
    if ys:
        return tree_map(lambda *frames: torch.stack(frames, dim=1), *ys), state
    shape = op.output_frame.shape
    if any(n is None for n in shape):
        raise ValueError(f"{type(op).__name__} has no fixed output frame: a chunk needs at least one frame")
    return x.new_zeros(x.shape[0], 0, *shape), state


def state_batch_size(state: State) -> int:
    leaves = tree_leaves(state)
    if not leaves:
        raise ValueError("state holds no tensors, so its batch size is unknown")
    return leaves[0].shape[0]


class StreamModule(nn.Module):
    """Base class for torch stream operators.

    Subclasses implement ``init_state``, ``step`` and ``forward`` and declare
    their frames; this class adds ``reset``, ``|`` composition and defaults:
    feature frames of any size in and out, one output per input frame, no
    look-ahead. ``clock_fields`` names state fields that the streams of a batch
    share (a sample clock), which ``reset`` leaves as they are. A learner whose
    frames at one time step form one training batch declares ``shared_state``:
    its state is one record for the whole batch, not one per stream.
    """

    latency_frames: int = 0
    input_frame: Frame = Frame()
    output_frame: Frame = Frame()
    changes_rate: bool = False
    clock_fields: tuple[str, ...] = ()
    shared_state: bool = False

    @property
    def latency_s(self) -> float | None:
        """Seconds from an input's arrival to the first output that hears it (None: rate unknown)."""
        return 0.0 if self.latency_frames == 0 else None

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def step(self, x: Any, state: State) -> tuple[Any, State]:
        """One frame ``(batch, *frame)``: by default ``forward`` on a one-frame chunk (see :func:`step_by_forward`)."""
        return step_by_forward(self, x, state)

    def reset(self, state: State, mask: Tensor) -> State:
        """Return ``state`` with the streams where ``mask`` is True re-initialised.

        Shapes: mask ``(batch,)`` bool; the other streams are untouched, and so are the ``clock_fields``.
        """
        batch = state_batch_size(state)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.shape != (batch,):
            raise ValueError(
                f"mask must be a bool tensor of shape (batch={batch},) "
                f"(got {mask.dtype} {tuple(mask.shape)})")
        leaves = tree_leaves(state)
        floats = [t for t in leaves if t.is_floating_point()]
        like = (floats or leaves)[0]
        fresh = self.init_state(batch, dtype=like.dtype if floats else torch.float32, device=like.device)
        mask = mask.to(like.device)

        def pick(path: tuple, old: Tensor, new: Tensor) -> Tensor:
            if path and path[-1] in self.clock_fields:
                return old
            return torch.where(mask.view((-1,) + (1,) * (old.dim() - 1)), new, old)

        return tree_map_paths(pick, state, fresh)

    def __or__(self, other: Any) -> "Pipeline":
        return Pipeline(self, other)

    def __ror__(self, other: Any) -> "Pipeline":
        return Pipeline(other, self)


class Map(StreamModule):
    """A stateless operator applying ``fn`` to every frame (and to whole chunks).

    ``fn`` must act on the last dimension only, so that it gives the same result
    on ``(batch, features)`` frames and ``(batch, time, features)`` chunks.
    """

    input_frame = output_frame = Frame((None,), ("values",), "float|uint8")

    def __init__(self, fn: Callable[[Tensor], Tensor], name: str | None = None):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable (got {type(fn).__name__})")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple:
        return ()

    def reset(self, state: tuple, mask: Tensor) -> tuple:
        return ()

    def step(self, x: Tensor, state: tuple = ()) -> tuple[Tensor, tuple]:
        return self.fn(x), ()

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        return self.fn(x), ()

    def extra_repr(self) -> str:
        return self.name


def _as_operator(op: Any) -> StreamModule:
    if isinstance(op, StreamModule):
        return op
    if callable(op):
        return Map(op)
    raise TypeError(f"a pipeline stage must be a StreamModule or a callable (got {type(op).__name__})")


class Pipeline(StreamModule):
    """Operators in sequence; itself a stream operator.

    ``a | b | c`` builds a new ``Pipeline`` (operands are never modified);
    plain callables are wrapped in :class:`Map`. Stages are reachable by
    position (``pipe[0]``) and by name (``pipe["LMUMemory"]``). The state is a
    tuple with one entry per stage. Frames go in as the first stage takes
    them and come out as the last gives them; a pipeline changes the rate if
    a stage does, and then its ``step`` returns the ``(batch, n, *frame)``
    frames one input frame completed. ``latency_frames`` sums the stages
    after the last rate change (the others are in other units);
    ``latency_s`` sums every stage's, where all are known.
    """

    def __init__(self, *ops: Any):
        super().__init__()
        stages: list[StreamModule] = []
        for op in ops:
            stages.extend(op.stages if isinstance(op, Pipeline) else [_as_operator(op)])
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        self.stages = nn.ModuleList(stages)
        self.names = self._unique_names(stages)

    @staticmethod
    def _unique_names(stages: list[StreamModule]) -> list[str]:
        names: list[str] = []
        for op in stages:
            base = op.name if isinstance(op, Map) else type(op).__name__
            name, k = base, 1
            while name in names:
                k += 1
                name = f"{base}_{k}"
            names.append(name)
        return names

    @property
    def input_frame(self) -> Frame:  # type: ignore[override]
        return self.stages[0].input_frame

    @property
    def output_frame(self) -> Frame:  # type: ignore[override]
        return self.stages[-1].output_frame

    @property
    def changes_rate(self) -> bool:  # type: ignore[override]
        return any(op.changes_rate for op in self.stages)

    @property
    def clock_fields(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(f for op in self.stages for f in op.clock_fields))

    @property
    def latency_frames(self) -> int:  # type: ignore[override]
        last_change = max((i for i, op in enumerate(self.stages) if op.changes_rate), default=-1)
        return sum(op.latency_frames for op in self.stages[max(last_change, 0):])

    @property
    def latency_s(self) -> float | None:  # type: ignore[override]
        stages = [op.latency_s for op in self.stages]
        return None if None in stages else sum(stages)

    def __getitem__(self, key: int | str) -> StreamModule:
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"no stage named {key!r}; stages are {self.names}")
            return self.stages[self.names.index(key)]
        return self.stages[key]

    def __len__(self) -> int:
        return len(self.stages)

    def _check_state(self, state: Any) -> tuple:
        if not isinstance(state, tuple) or hasattr(state, "_fields") or len(state) != len(self.stages):
            raise TypeError(
                f"state must be the tuple of {len(self.stages)} stage states from "
                f"Pipeline.init_state (got {type(state).__name__})")
        return state

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> tuple:
        return tuple(op.init_state(batch_size, dtype=dtype, device=device) for op in self.stages)

    def reset(self, state: tuple, mask: Tensor) -> tuple:
        state = self._check_state(state)
        return tuple(op.reset(s, mask) for op, s in zip(self.stages, state))

    def step(self, x: Tensor, state: tuple) -> tuple[Any, tuple]:
        state = self._check_state(state)
        if self.changes_rate:  # after a rate change, a step may carry 0, 1 or more frames on
            return step_by_forward(self, x, state)
        new = []
        for op, s in zip(self.stages, state):
            x, s = op.step(x, s)
            new.append(s)
        return x, tuple(new)

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Any, tuple]:
        outputs, state = self.trace(x, state)
        return outputs[-1], state

    def trace(self, x: Tensor, state: tuple | None = None) -> tuple[list, tuple]:
        """``forward`` that returns every stage's output of the chunk, in order, and the new state."""
        if state is None:
            state = tuple(None for _ in self.stages)
        else:
            state = self._check_state(state)
        outputs, new = [], []
        for op, s in zip(self.stages, state):
            x, s = op(x, s)
            outputs.append(x)
            new.append(s)
        return outputs, tuple(new)

    def extra_repr(self) -> str:
        return " | ".join(self.names)


def run_chunks(op: StreamModule, chunks: Iterable[Tensor],
               state: State = None) -> Iterator[tuple[Tensor, State]]:
    """Feed ``chunks`` (each ``(batch, time, features)``) through ``op`` in order.

    Yields ``(y_chunk, state)`` after every chunk, so the caller can stop,
    save the state and resume later.
    """
    for chunk in chunks:
        y, state = op(chunk, state)
        yield y, state


def save_state(state: State, path: str) -> None:
    """Write a stream state to ``path`` (``torch.save``)."""
    torch.save(state, path)


def load_state(path: str, map_location: str | torch.device | None = None) -> State:
    """Read a state written by :func:`save_state` (safe ``weights_only`` load)."""
    return torch.load(path, map_location=map_location, weights_only=True)
