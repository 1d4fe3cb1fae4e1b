"""Shared timing for the benchmarks: one thread, candidates interleaved, medians.

Import this module before numpy/torch: it pins every thread pool to one thread.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import torch

from streamlmu import cpu


def single_thread() -> None:
    torch.set_num_threads(1)
    numba.set_num_threads(1)


def arguments(doc: str, name: str, quick_help: str = "few short rounds (a smoke test, noisy)",
              argv: list[str] | None = None) -> argparse.Namespace:
    """A benchmark's ``--quick`` and ``--out`` (default ``bench/results/<name>.json``); pins one thread."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / f"{name}.json"))
    args = parser.parse_args(argv)
    single_thread()
    return args


def write_report(report: dict, out: str) -> None:
    """Write a benchmark's JSON report to ``out`` and say where."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")


def calls_for(fn: Callable[[], object], block_seconds: float) -> int:
    """How many calls fill about ``block_seconds`` (at least one)."""
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < block_seconds / 4:
        fn()
        n += 1
    return max(4 * n, 1) if time.perf_counter() - start < block_seconds else 1


def measure(fns: dict[str, Callable[[], object]], rounds: int, block_seconds: float) -> dict[str, float]:
    """Median seconds per call of each candidate, interleaved over ``rounds`` so noise hits all alike."""
    for fn in fns.values():  # warm up: compile kernels, fill caches
        for _ in range(3):
            fn()
    counts = {name: calls_for(fn, block_seconds) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = counts[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(s) for name, s in samples.items()}


def machine() -> dict[str, object]:
    return {"processor": platform.processor() or platform.machine(), "cpu": cpu.cpu_model() or platform.processor(),
            "int8_dot_instructions": cpu.cpu_has(cpu.INT8_DOT_FLAGS),
            "bf16_instructions": cpu.cpu_has(cpu.BF16_FLAGS), "python": platform.python_version(),
            "torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__}
