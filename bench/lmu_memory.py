"""Benchmark of the Legendre memory update, side by side in one run, on one thread.

For batch 1 and 64 and order 64 and 256 it times, per call:

* ``kernel``      the Numba dense step on NumPy arrays;
* ``step``        ``LMUMemory.step`` through its public torch API, as a stream
                  uses it (each call gets the state the previous one returned);
* ``eager``       a plain torch step ``m = m @ Ad.T + u * Bd``, fed back the same way;
* ``floor``       a bare NumPy matvec ``Ad @ m`` (the floor of a dense step);
* ``euler``       the Numba O(order) Euler step (prefix sums) on NumPy arrays;
* ``fwd_auto``    ``LMUMemory.forward`` on a 128-frame chunk (default path: Numba scan);
* ``fwd_fft``     the same chunk by FFT convolution;
* ``eager_x128``  128 torch eager steps;
* ``scan_dense``, ``scan_euler``  the Numba dense and Euler scans over 128
                  frames: the step arithmetic without a Python call per frame.

A Python call into a Numba kernel costs about 0.3 us whatever it computes, so
the Euler-vs-dense target is checked on the scans, where that cost is paid
once per 128 frames; the per-call ratio is printed beside it.

All torch calls run in inference mode. Candidates are interleaved over several rounds and the median is kept, so
machine noise hits all of them alike; the targets are ratios. Prints a table
and writes ``bench/results/lmu_memory.json``.

Usage: ``python bench/lmu_memory.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import time
from typing import Callable

import numpy as np
import torch

from streamlmu import LMUMemory, legendre
from streamlmu.nn.memory import LMUMemoryState
from streamlmu.kernels import legendre as kernels

CHUNK = 128
THETA = 128.0
CHUNKED = ("fwd_auto", "fwd_fft", "eager_x128", "scan_dense", "scan_euler")  # 128 frames per call
# (name, numerator, denominator, batch, order, minimum ratio): numerator time / denominator time.
TARGETS = [
    ("kernel within 1.5x of matvec floor", "floor", "kernel", 1, 256, 1 / 1.5),
    ("public step vs torch eager", "eager", "step", 1, 256, 1.5),
    ("public step vs torch eager", "eager", "step", 1, 64, 1.0),
    ("128-frame forward vs 128 eager steps", "eager_x128", "fwd_auto", 1, 256, 4.0),
    ("128-frame forward vs 128 eager steps", "eager_x128", "fwd_auto", 1, 64, 20.0),
    ("Euler O(order) step vs dense (scans)", "scan_dense", "scan_euler", 1, 256, 20.0),
]


def candidates(batch: int, order: int) -> dict[str, Callable[[], object]]:
    """The timed callables for one configuration; all read the same inputs."""
    mem = LMUMemory(1, order, THETA)
    Ad_np, Bd_np = (a.astype(np.float32) for a in legendre.discretize(*legendre.lmu_matrices(order), THETA))
    coef = legendre.euler_coefficients(order, THETA).astype(np.float32)
    rng = np.random.default_rng(0)
    m_np = rng.standard_normal((batch, 1, order)).astype(np.float32) * 0.1
    u_np = rng.standard_normal((batch, 1)).astype(np.float32)
    us_np = rng.standard_normal((batch, CHUNK, 1)).astype(np.float32)
    out, outs = np.empty_like(m_np), np.empty((batch, CHUNK, 1, order), np.float32)
    m2 = np.ascontiguousarray(m_np[:, 0])
    floor = (lambda: Ad_np @ m2[0]) if batch == 1 else (lambda: m2 @ Ad_np.T)
    with torch.inference_mode():
        state = LMUMemoryState(torch.from_numpy(m_np.copy()))
        x = torch.from_numpy(u_np.copy())
        u = x.unsqueeze(-1)
        Ad, Bd = torch.from_numpy(Ad_np), torch.from_numpy(Bd_np)
        chunk = torch.from_numpy(us_np.copy())
    streams = {"step": state, "eager": state.m}

    def step() -> None:
        streams["step"] = mem.step(x, streams["step"])[1]

    def eager() -> None:
        streams["eager"] = streams["eager"] @ Ad.T + u * Bd

    def eager_chunk() -> torch.Tensor:
        mm = state.m
        for t in range(CHUNK):
            mm = mm @ Ad.T + chunk[:, t, :, None] * Bd
        return mm

    return {
        "kernel": lambda: kernels.lmu_step(u_np, m_np, Ad_np, Bd_np, out),
        "step": step,
        "eager": eager,
        "floor": floor,
        "euler": lambda: kernels.lmu_euler_step(u_np, m_np, coef, out),
        "fwd_auto": lambda: mem(chunk, state),
        "fwd_fft": lambda: mem(chunk, state, method="fft"),
        "eager_x128": eager_chunk,
        "scan_dense": lambda: kernels.lmu_scan(us_np, m_np, Ad_np, Bd_np, outs),
        "scan_euler": lambda: kernels.lmu_euler_scan(us_np, m_np, coef, outs),
    }


def main() -> None:
    args = timing.arguments(__doc__, "lmu_memory")
    rounds, block = (2, 0.005) if args.quick else (15, 0.05)

    results = []
    for order in (64, 256):
        for batch in (1, 64):
            with torch.inference_mode():  # the whole measurement: no per-call mode switch
                seconds = timing.measure(candidates(batch, order), rounds, block)
            results.append({"batch": batch, "order": order, "us_per_call": {k: v * 1e6 for k, v in seconds.items()}})

    names = list(results[0]["us_per_call"])
    print(f"LMU memory step, one thread, float32 (median us per call; fwd_*, eager_x128 and scan_* are {CHUNK}-frame chunks)")
    print(f"{'batch':>5} {'order':>5} " + " ".join(f"{n:>10}" for n in names))
    for r in results:
        print(f"{r['batch']:>5} {r['order']:>5} " + " ".join(f"{r['us_per_call'][n]:>10.2f}" for n in names))

    print("\nframes/s (batch x calls/s; chunks count 128 frames)")
    for r in results:
        fps = {n: r["batch"] * (CHUNK if n in CHUNKED else 1) / (t * 1e-6)
               for n, t in r["us_per_call"].items()}
        r["frames_per_s"] = fps
        print(f"{r['batch']:>5} {r['order']:>5} " + " ".join(f"{fps[n]:>10.3g}" for n in names))

    print("\ntargets (ratio = slower / faster, higher is better)")
    checks = []
    for label, num, den, batch, order, minimum in TARGETS:
        r = next(r for r in results if r["batch"] == batch and r["order"] == order)
        ratio = r["us_per_call"][num] / r["us_per_call"][den]
        met = ratio >= minimum
        checks.append({"target": label, "batch": batch, "order": order, "ratio": ratio,
                       "numerator": num, "denominator": den, "minimum": minimum, "met": met})
        print(f"  {label:<40} batch {batch:>2} order {order:>3}: {num}/{den} = {ratio:6.2f}"
              f"  (need >= {minimum:.2f}) {'ok' if met else 'MISSED'}")
    for r in results:
        ratio = r["us_per_call"]["kernel"] / r["us_per_call"]["euler"]
        print(f"  (info) Euler vs dense per Python call, batch {r['batch']:>2} order {r['order']:>3}: {ratio:.1f}x")

    report = {
        "benchmark": "lmu_memory", "quick": args.quick, "chunk_frames": CHUNK, "threads": 1,
        "machine": timing.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results, "targets": checks,
    }
    timing.write_report(report, args.out)


if __name__ == "__main__":
    main()
