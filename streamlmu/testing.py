"""Conformance checks for stream operators, usable from any test suite.

``check_stream_op(op, x)`` asserts the contract of :mod:`streamlmu.stream`:
chunk invariance (random chunk sizes, including 1), step loop = forward,
batched = stacked single streams, ``reset(mask)`` touches only masked streams,
state save/load resumes bit-exactly, and the operator survives pickling.
Failures name the property and the maximum error.
"""
from __future__ import annotations

import io
import pickle

import torch
from torch import Tensor

from streamlmu.stream import State, StreamModule, tree_leaves

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def max_abs_diff(a: Tensor | State, b: Tensor | State) -> float:
    """Largest absolute difference over all tensors of two equally shaped trees."""
    la, lb = tree_leaves(a), tree_leaves(b)
    if len(la) != len(lb):
        raise AssertionError(f"trees differ in size: {len(la)} vs {len(lb)} tensors")
    diffs = []
    for ta, tb in zip(la, lb):
        if ta.shape != tb.shape:
            raise AssertionError(f"shapes differ: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if ta.numel():
            diffs.append((ta.double() - tb.double()).abs().max().item())
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


def run_step_loop(op: StreamModule, x: Tensor, state: State = None) -> tuple[Tensor, State]:
    """``op.step`` on every frame of ``x`` ``(batch, time, features)``, outputs stacked on time."""
    state = op.init_state(x.shape[0], dtype=x.dtype, device=x.device) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = op.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def run_chunked(op: StreamModule, x: Tensor, sizes: list[int], state: State = None) -> tuple[Tensor, State]:
    """``op.forward`` over consecutive chunks of the given sizes, outputs concatenated."""
    ys, t0 = [], 0
    for size in sizes:
        y, state = op(x[:, t0:t0 + size], state)
        ys.append(y)
        t0 += size
    return torch.cat(ys, dim=1), state


def _roundtrip(state: State) -> State:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)  # default weights_only=True: state records must be registered


def check_stream_op(op: StreamModule, x: Tensor, atol: float | None = None, seed: int = 0,
                    chunkings: int = 3) -> dict[str, float]:
    """Assert the stream-operator contract for ``op`` on input ``x`` ``(batch, time, features)``.

    Runs under ``torch.no_grad()`` with ``op`` as given (call ``op.eval()``
    first for modules with training-time behaviour). Returns the maximum error
    seen per property.
    """
    if x.dim() != 3 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (batch>=2, time, features) (got {tuple(x.shape)})")
    atol = TOLERANCE.get(x.dtype, 1e-5) if atol is None else atol
    gen = torch.Generator().manual_seed(seed)
    batch, time = x.shape[0], x.shape[1]
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

        singles = [op(x[i:i + 1])[0] for i in range(batch)]
        errors["batch"] = assert_close(torch.cat(singles, dim=0), y, atol, "batched vs single streams")

        half = time // 2
        _, mid = op(x[:, :half])
        mask = torch.zeros(batch, dtype=torch.bool)
        mask[0] = True
        cleared = op.reset(mid, mask)
        fresh = op.init_state(batch, dtype=x.dtype, device=x.device)
        for leaf_new, leaf_mid, leaf_fresh in zip(tree_leaves(cleared), tree_leaves(mid), tree_leaves(fresh)):
            assert torch.equal(leaf_new[0], leaf_fresh[0]), "reset(mask) did not clear a masked stream"
            assert torch.equal(leaf_new[1:], leaf_mid[1:]), "reset(mask) changed an unmasked stream"

        y_rest, s_rest = op(x[:, half:], mid)
        y_loaded, s_loaded = op(x[:, half:], _roundtrip(mid))
        assert max_abs_diff(y_loaded, y_rest) == 0.0, "state save/load did not resume bit-exactly"
        assert max_abs_diff(s_loaded, s_rest) == 0.0, "state save/load did not resume bit-exactly"

        clone = pickle.loads(pickle.dumps(op))
        assert max_abs_diff(clone(x)[0], y) == 0.0, "a pickled copy of the operator gives other outputs"
    return errors


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
