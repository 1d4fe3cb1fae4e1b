"""The stream operator contract, pipelines and state input/output.

A stream operator maps a sequence to a sequence frame by frame with *explicit*
state::

    state = op.init_state(batch_size=1)
    y_t, state = op.step(x_t, state)        # x_t: (batch, features)
    y, state = op.forward(x, state=None)    # x:   (batch, time, features)
    state = op.reset(state, mask)           # mask: (batch,) bool

``forward`` on any split of a sequence into chunks equals ``forward`` on the
whole and equals one ``step`` per frame. State is a (nested) tuple of tensors
whose first dimension is the batch; it never lives in an attribute, so any
number of independent streams can share one operator.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

State = Any  # a tensor, or a (named) tuple of states


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


def tree_map(fn: Callable[..., Tensor], tree: State, *others: State) -> State:
    """Apply ``fn`` leaf-wise over tensors nested in (named) tuples."""
    if isinstance(tree, Tensor):
        return fn(tree, *others)
    if isinstance(tree, tuple):
        parts = [tree_map(fn, *leaves) for leaves in zip(tree, *others)]
        return type(tree)(*parts) if hasattr(tree, "_fields") else type(tree)(parts)
    raise TypeError(f"state must be a tensor or a tuple of tensors (got {type(tree).__name__})")


def tree_leaves(tree: State) -> list[Tensor]:
    """The tensors of a state, depth first."""
    if isinstance(tree, Tensor):
        return [tree]
    if isinstance(tree, tuple):
        return [leaf for part in tree for leaf in tree_leaves(part)]
    raise TypeError(f"state must be a tensor or a tuple of tensors (got {type(tree).__name__})")


def check_input(x: Any, rank: int, features: int | None, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a floating tensor of the given rank.

    ``rank`` 2 means ``(batch, features)`` (one frame), 3 ``(batch, time,
    features)``. ``features=None`` skips the feature-size check.
    """
    layout = "(batch, features)" if rank == 2 else "(batch, time, features)"
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout} (got {type(x).__name__})")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (got dtype {x.dtype})")
    if x.dim() != rank or (features is not None and x.shape[-1] != features):
        want = layout.replace("features", f"features={features}") if features is not None else layout
        raise ValueError(f"{name} must have shape {want} (got {tuple(x.shape)})")


def check_finite(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` holds a NaN or an infinity."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; streams accept finite values only")


def step_by_forward(op: "StreamModule", x: Tensor, state: State, features: int) -> tuple[Tensor, State]:
    """A ``step`` that is ``forward`` on a one-frame chunk: x ``(batch, features)`` -> ``(batch, ...)``.

    For operators whose chunk path is already exact per frame, so the two
    cannot drift apart.
    """
    check_input(x, 2, features)
    y, state = op.forward(x.unsqueeze(1), state)
    return y[:, 0], state


def state_batch_size(state: State) -> int:
    leaves = tree_leaves(state)
    if not leaves:
        raise ValueError("state holds no tensors, so its batch size is unknown")
    return leaves[0].shape[0]


class StreamModule(nn.Module):
    """Base class for torch stream operators.

    Subclasses implement ``init_state``, ``step`` and ``forward``; this class
    adds ``reset``, ``|`` composition and ``latency_frames`` (0 by default).
    """

    latency_frames: int = 0

    def init_state(self, batch_size: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def reset(self, state: State, mask: Tensor) -> State:
        """Return ``state`` with the streams where ``mask`` is True re-initialised.

        Shapes: mask ``(batch,)`` bool; the other streams are untouched.
        """
        batch = state_batch_size(state)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.shape != (batch,):
            raise ValueError(
                f"mask must be a bool tensor of shape (batch={batch},) "
                f"(got {mask.dtype} {tuple(mask.shape)})")
        leaf = tree_leaves(state)[0]
        fresh = self.init_state(batch, dtype=leaf.dtype, device=leaf.device)
        mask = mask.to(leaf.device)

        def pick(old: Tensor, new: Tensor) -> Tensor:
            return torch.where(mask.view((-1,) + (1,) * (old.dim() - 1)), new, old)

        return tree_map(pick, state, fresh)

    def __or__(self, other: Any) -> "Pipeline":
        return Pipeline(self, other)

    def __ror__(self, other: Any) -> "Pipeline":
        return Pipeline(other, self)


class Map(StreamModule):
    """A stateless operator applying ``fn`` to every frame (and to whole chunks).

    ``fn`` must act on the last dimension only, so that it gives the same result
    on ``(batch, features)`` frames and ``(batch, time, features)`` chunks.
    """

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
    tuple with one entry per stage; ``latency_frames`` is the stages' sum.
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
    def latency_frames(self) -> int:  # type: ignore[override]
        return sum(op.latency_frames for op in self.stages)

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

    def step(self, x: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        state = self._check_state(state)
        new = []
        for op, s in zip(self.stages, state):
            x, s = op.step(x, s)
            new.append(s)
        return x, tuple(new)

    def forward(self, x: Tensor, state: tuple | None = None) -> tuple[Tensor, tuple]:
        if state is None:
            state = tuple(None for _ in self.stages)
        else:
            state = self._check_state(state)
        new = []
        for op, s in zip(self.stages, state):
            x, s = op(x, s)
            new.append(s)
        return x, tuple(new)

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
