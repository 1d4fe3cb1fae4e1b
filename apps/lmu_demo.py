"""Live LMU demo: stream a signal frame by frame and recall it from the Legendre memory."""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from streamlmu import LMUMemory, Map, delay_weights

DESCRIPTION = """Live LMU demo: a signal is streamed one frame at a time through an LMUMemory.
A fixed linear readout of the memory recalls the signal as it was theta*delay frames ago;
each line shows the input (*), the recalled value (o) and the true delayed value (x)."""

WIDTH = 49


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=400, help="frames to stream")
    parser.add_argument("--order", type=int, default=32, help="Legendre coefficients")
    parser.add_argument("--theta", type=float, default=100.0, help="memory window in frames")
    parser.add_argument("--delay", type=float, default=0.5, help="recalled delay as a fraction of theta")
    parser.add_argument("--fps", type=float, default=50.0, help="frames per second shown (0: as fast as possible)")
    parser.add_argument("--every", type=int, default=2, help="print every N-th frame")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random test signal")


def test_signal(frames: int, seed: int) -> np.ndarray:
    """A sum of four slow sines with random frequencies and phases, ``(frames,)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)
    freqs = rng.uniform(0.003, 0.02, 4)
    phases = rng.uniform(0, 2 * math.pi, 4)
    return np.sin(2 * math.pi * freqs[:, None] * t + phases[:, None]).sum(0) / 1.5


def strip(values: dict[str, float], lo: float = -2.5, hi: float = 2.5) -> str:
    row = [" "] * WIDTH
    row[WIDTH // 2] = "|"
    for mark, v in values.items():
        k = int(round((min(max(v, lo), hi) - lo) / (hi - lo) * (WIDTH - 1)))
        row[k] = mark
    return "".join(row)


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.delay <= 1.0:
        raise ValueError(f"--delay must lie in [0, 1] (got {args.delay})")
    lag = int(round(args.delay * args.theta))
    w = torch.tensor(delay_weights(args.order, args.delay), dtype=torch.float32)
    recall = LMUMemory(1, args.order, args.theta, flatten=True) | Map(lambda m: m @ w, name="recall")
    u = test_signal(args.frames, args.seed).astype(np.float32)
    state = recall.init_state(1)
    print(f"LMU order {args.order}, theta {args.theta:g} frames: recalling u(t - {lag}) from the memory")
    print(f"{'frame':>6} {'input':>7} {'recall':>7} {'true':>7}   {'* input  o recalled  x true':^{WIDTH}}")
    recalled = np.zeros(args.frames, np.float32)
    step_seconds = np.zeros(args.frames)
    with torch.inference_mode():
        recall.step(torch.zeros(1, 1), state)  # load the compiled kernels before timing
        for t in range(args.frames):
            start = time.perf_counter()
            y, state = recall.step(torch.from_numpy(u[t:t + 1]).view(1, 1), state)
            step_seconds[t] = time.perf_counter() - start
            recalled[t] = y.item()
            if t % args.every == 0:
                true = float(u[t - lag]) if t >= lag else 0.0
                marks = {"x": true, "o": recalled[t], "*": float(u[t])}
                print(f"{t:6d} {u[t]:7.3f} {recalled[t]:7.3f} {true:7.3f}   {strip(marks)}", flush=True)
                if args.fps > 0:
                    time.sleep(args.every / args.fps)
    settled = slice(max(lag, int(args.theta)), args.frames)
    if settled.start < args.frames - 2:
        target = u[settled.start - lag:args.frames - lag]
        corr = np.corrcoef(recalled[settled], target)[0, 1]
        rmse = float(np.sqrt(np.mean((recalled[settled] - target) ** 2)))
        print(f"recall of u(t - {lag}) after the window filled: correlation {corr:.4f}, RMSE {rmse:.4f}")
    pacing = "paced frames wake a cold CPU; --fps 0 shows the warm figure" if args.fps > 0 else "unpaced"
    print(f"median step time {np.median(step_seconds) * 1e6:.1f} us/frame "
          f"(pipeline: memory + readout; {pacing})")
    return 0
