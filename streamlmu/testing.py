"""Conformance checks for stream operators, usable from any test suite.

``check_stream_op(op, x)`` asserts the contract of :mod:`streamlmu.stream`
for any frame layout, rate-changing operators and structured outputs: chunk
invariance (random chunk sizes, including 1), step loop = forward, batched =
stacked single streams, ``reset(mask)`` touches only masked streams (and no
shared clock), state save/load resumes bit-exactly, and the operator survives
pickling. Failures name the property and the maximum error.
"""
from __future__ import annotations

import io
import pickle

import torch
from torch import Tensor

from streamlmu.stream import State, StreamModule, tree_leaves, tree_map, tree_paths

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def max_abs_diff(a: Tensor | State, b: Tensor | State) -> float:
    """Largest absolute difference over all tensors of two equally shaped trees (inf where one side is NaN)."""
    la, lb = tree_leaves(a), tree_leaves(b)
    if len(la) != len(lb):
        raise AssertionError(f"trees differ in size: {len(la)} vs {len(lb)} tensors")
    diffs = []
    for ta, tb in zip(la, lb):
        if ta.shape != tb.shape:
            raise AssertionError(f"shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.numel():
            a, b = ta.double(), tb.double()
            gap = (a - b).abs().masked_fill(a.isnan() & b.isnan(), 0.0)  # NaN on both sides is no difference
            diffs.append(gap.nan_to_num(nan=float("inf")).max().item())
    return max(diffs, default=0.0)


def assert_close(a: Tensor | State, b: Tensor | State, atol: float, what: str) -> float:
    err = max_abs_diff(a, b)
    assert err <= atol, f"{what}: max abs diff {err:.3e} > {atol:.1e}"
    return err


def random_chunk_sizes(length: int, generator: torch.Generator, max_chunk: int = 64) -> list[int]:
    """A random split of ``length`` frames that includes chunks of size 1."""
    sizes: list[int] = [1] if length else []
    while sum(sizes) < length:
        sizes.append(int(torch.randint(1, max_chunk + 1, (1,), generator=generator)))
    sizes[-1] -= sum(sizes) - length
    return [s for s in sizes if s > 0]


def join(parts: list, dim: int = 1, stack: bool = False) -> object:
    """Outputs (tensors or trees of them) joined leaf by leaf: concatenated along ``dim``, or stacked."""
    glue = torch.stack if stack else torch.cat
    return tree_map(lambda *leaves: glue(leaves, dim=dim), parts[0], *parts[1:])


def _frames(x: object, index: int | slice, dim: int = 1) -> object:
    """Frames of an input (a tensor, or a tree of tensors such as :class:`SpeechFrames`) along ``dim``."""
    return tree_map(lambda t: t[(slice(None),) * dim + (index,)], x)


def _layout(x: object) -> tuple[int, int, torch.dtype, torch.device]:
    """Batch size, frames, floating dtype (float32 if none) and device of an input."""
    leaves = tree_leaves(x)
    floats = [t for t in leaves if t.is_floating_point()]
    return leaves[0].shape[0], leaves[0].shape[1], floats[0].dtype if floats else torch.float32, leaves[0].device


def run_step_loop(op: StreamModule, x: object, state: State = None) -> tuple[object, State]:
    """``op.step`` on every frame of ``x`` ``(batch, time, *frame)``, outputs joined on time."""
    batch, time, dtype, device = _layout(x)
    state = op.init_state(batch, dtype=dtype, device=device) if state is None else state
    ys = []
    for t in range(time):
        y, state = op.step(_frames(x, t), state)
        ys.append(y)
    return join(ys, stack=not op.changes_rate), state


def run_chunked(op: StreamModule, x: object, sizes: list[int], state: State = None) -> tuple[object, State]:
    """``op.forward`` over consecutive chunks of the given sizes, outputs concatenated."""
    ys, t0 = [], 0
    for size in sizes:
        y, state = op(_frames(x, slice(t0, t0 + size)), state)
        ys.append(y)
        t0 += size
    return join(ys), state


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal in shape and every value (NaN equals NaN: a fresh state may hold NaN as "nothing yet")."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all()) if a.is_floating_point() else torch.equal(a, b)


def _roundtrip(state: State) -> State:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)  # default weights_only=True: state records must be registered


def check_stream_op(op: StreamModule, x: object, atol: float | None = None, seed: int = 0,
                    chunkings: int = 3) -> dict[str, float]:
    """Assert the stream-operator contract for ``op`` on input ``x`` ``(batch, time, *frame)`` (or a tree of
    such tensors, for operators that take structured frames).

    Runs under ``torch.no_grad()`` with ``op`` as given (call ``op.eval()``
    first for modules with training-time behaviour). Returns the maximum error
    seen per property.
    """
    if isinstance(x, Tensor):
        op.input_frame.check(x, time=True)
    batch, time, dtype, device = _layout(x)
    if batch < 2:
        raise ValueError(f"x must hold at least 2 streams to check batching (got {batch})")
    atol = TOLERANCE.get(dtype, 1e-5) if atol is None else atol
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, float] = {}
    with torch.no_grad():
        y, state = op(x)
        y_step, state_step = run_step_loop(op, x)
        errors["step"] = assert_close(y_step, y, atol, "step loop vs forward (outputs)")
        errors["step_state"] = assert_close(state_step, state, atol, "step loop vs forward (final state)")

        for k in range(chunkings):
            sizes = random_chunk_sizes(time, gen)
            y_chunk, state_chunk = run_chunked(op, x, sizes)
            errors[f"chunks{k}"] = assert_close(y_chunk, y, atol, f"chunks {sizes[:8]}... vs whole")
            assert_close(state_chunk, state, atol, "chunked final state vs whole")

        half = time // 2
        _, mid = op(_frames(x, slice(None, half)))
        if op.shared_state:  # one state for the batch: streams are not independent, nor reset one by one
            _check_resume(op, x, half, mid)
            return errors
        singles = [op(_frames(x, slice(i, i + 1), dim=0))[0] for i in range(batch)]
        errors["batch"] = assert_close(join(singles, dim=0), y, atol, "batched vs single streams")

        mask = torch.zeros(batch, dtype=torch.bool)
        mask[0] = True
        cleared = op.reset(mid, mask)
        fresh = op.init_state(batch, dtype=dtype, device=device)
        for (path, leaf_new), leaf_mid, leaf_fresh in zip(tree_paths(cleared), tree_leaves(mid), tree_leaves(fresh)):
            if path and path[-1] in op.clock_fields:
                assert _same(leaf_new, leaf_mid), f"reset(mask) changed the shared clock {path[-1]}"
                continue
            assert _same(leaf_new[0], leaf_fresh[0]), f"reset(mask) did not clear a masked stream ({path})"
            assert _same(leaf_new[1:], leaf_mid[1:]), f"reset(mask) changed an unmasked stream ({path})"

        _check_resume(op, x, half, mid)
    return errors


def _check_resume(op: StreamModule, x: object, half: int, mid: State) -> None:
    """The state after ``x``'s first ``half`` frames resumes bit-exactly through save/load, and a pickled
    copy of ``op`` gives the same outputs."""
    y_rest, s_rest = op(_frames(x, slice(half, None)), mid)
    y_loaded, s_loaded = op(_frames(x, slice(half, None)), _roundtrip(mid))
    assert max_abs_diff(y_loaded, y_rest) == 0.0, "state save/load did not resume bit-exactly"
    assert max_abs_diff(s_loaded, s_rest) == 0.0, "state save/load did not resume bit-exactly"
    clone = pickle.loads(pickle.dumps(op))
    assert max_abs_diff(clone(x)[0], op(x)[0]) == 0.0, "a pickled copy of the operator gives other outputs"


def randomize_batchnorm(model: torch.nn.Module, spiking: bool) -> torch.nn.Module:
    """Give every BatchNorm trained-looking statistics and gains, in place (spiking: gains that make neurons fire).

    Freshly initialised BatchNorms are identities, which hides folding and
    ordering mistakes; tests and benchmarks use this instead.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(1.5, 3.0) if spiking else m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.4)
    return model
