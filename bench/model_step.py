"""Benchmark of one streaming frame of LMUFormer models, side by side in one run, on one thread.

For the ``paper`` and ``tiny`` presets of LMUFormer and Spiking LMUFormer and
batches of 1, 64 and 256 streams it times, per frame of every stream:

* ``engine``  the streaming engine (``model.streaming()``) stepping all streams;
* ``eager``   the torch model's own ``step`` (inference mode), state fed back;
* ``window``  re-running the whole 1 s window every 10 ms hop with the parallel
              torch forward, as a user of a non-streaming model does: the
              official model's input, 98 frames padded to 128 (LMUFormer only:
              convolutions, BLAS, FFT memory);
* ``kwt``     the causal KWT baseline's ``step`` (same preset name) once its
              128-frame window is full: a transformer re-run over the window
              every hop (LMUFormer rows only);
* ``floor``   a bare NumPy chain of the same matrix products (each dense layer
              and the Legendre update, ``x @ W`` into preallocated outputs).

Targets (LMUFormer, one thread): engine >= 3x faster than eager at batch 1 on
``paper`` and >= 10x on ``tiny``; >= 50x cheaper than ``window``; within 2x of
the floor at batch 1; >= 50 % of the floor's frames/s at batch 64. The spiking
rows are reported beside them. Prints a table and writes
``bench/results/model_step.json``.

Usage: ``python bench/model_step.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import time
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from streamlmu.kernels import engine as ops
from streamlmu.models import KWT, KWTConfig, LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.testing import randomize_batchnorm

WINDOW_FRAMES = 128  # 1 s of 10 ms hops (98 frames), padded as the official model's input
BATCHES = (1, 64, 256)
# (label, numerator, denominator, preset, batch, minimum ratio) on LMUFormer; ratio = numerator / denominator time.
TARGETS = [
    ("engine vs torch eager step", "eager", "engine", "paper", 1, 3.0),
    ("engine vs torch eager step", "eager", "engine", "tiny", 1, 10.0),
    ("engine vs re-running the 1 s window", "window", "engine", "paper", 1, 50.0),
    ("engine vs re-running the 1 s window", "window", "engine", "tiny", 1, 50.0),
    ("engine within 2x of the floor", "floor", "engine", "paper", 1, 0.5),
    ("engine within 2x of the floor", "floor", "engine", "tiny", 1, 0.5),
    ("engine >= 50 % of floor frames/s", "floor", "engine", "paper", 64, 0.5),
    ("engine >= 50 % of floor frames/s", "floor", "engine", "tiny", 64, 0.5),
]


def build(preset: str, spiking: bool) -> LMUFormer | SpikingLMUFormer:
    """An eval-mode model with trained-like BatchNorm statistics (so spikes fire)."""
    torch.manual_seed(0)
    model = (SpikingLMUFormer if spiking else LMUFormer)(LMUFormerConfig.preset(preset, spiking=spiking)).eval()
    return randomize_batchnorm(model, spiking)


def window_forward(model: LMUFormer, x: torch.Tensor) -> torch.Tensor:
    """Class logits of whole windows by the parallel torch path: x ``(B, T, in)`` -> ``(B, classes)``."""
    def bn(h: torch.Tensor, norm: torch.nn.BatchNorm1d) -> torch.Tensor:
        return F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)

    h = x.transpose(1, 2)
    for conv, norm in zip(model.convs[:-1], model.conv_bns):
        h = bn(F.relu(F.conv1d(h, conv.weight, padding=1)), norm)
    h = (h + F.conv1d(h, model.convs[-1].weight, padding=1)).transpose(1, 2)
    for block in model.blocks:
        u = F.relu(F.linear(h, block.encoder.weight, block.encoder.bias))
        m, _ = block.memory(u, method="fft")
        hidden = F.relu(F.linear(torch.cat([m, h], dim=-1), block.hidden.weight, block.hidden.bias))
        proj = F.linear(hidden, block.proj.weight, block.proj.bias)
        h = h + bn(proj.transpose(1, 2), block.proj_bn).transpose(1, 2)
        z = F.gelu(bn(F.linear(h, block.fc1.weight, block.fc1.bias).transpose(1, 2), block.fc1_bn).transpose(1, 2))
        f = F.linear(z, block.fc2.weight, block.fc2.bias)
        h = h + F.relu(bn(f.transpose(1, 2), block.fc2_bn).transpose(1, 2))
    return F.linear(h.mean(dim=1), model.head.weight, model.head.bias)


def floor_chain(program, batch: int) -> Callable[[], None]:
    """The engine program's matrix products as bare NumPy calls into preallocated outputs."""
    rng = np.random.default_rng(0)
    products = []
    for row in program.ops:
        if row[0] == ops.LINEAR:
            k_in, n_out, offset = int(row[2]), int(row[4]), int(row[5])
        elif row[0] == ops.MEMORY:
            k_in = n_out = int(row[2])
            offset = int(row[7])
        else:
            continue
        w = program.weights[offset:offset + k_in * n_out].reshape(k_in, n_out)
        shape = (k_in,) if batch == 1 else (batch, k_in)
        x = rng.standard_normal(shape).astype(np.float32)
        out = np.empty((n_out,) if batch == 1 else (batch, n_out), np.float32)
        products.append((x, w, out))

    def run() -> None:
        for x, w, out in products:
            np.matmul(x, w, out=out)
    return run


def candidates(model, preset: str, batch: int, quick: bool) -> dict[str, Callable[[], object]]:
    runner = model.streaming()
    frame = torch.randn(batch, model.config.in_features, generator=torch.Generator().manual_seed(1))
    streams = {"engine": runner.init_state(batch), "eager": model.init_state(batch)}

    def engine() -> None:
        streams["engine"] = runner.step(frame, streams["engine"])[1]

    def eager() -> None:
        streams["eager"] = model.step(frame, streams["eager"])[1]

    fns = {"engine": engine, "eager": eager, "floor": floor_chain(runner.program, batch)}
    if not model.config.spiking and batch <= (1 if quick else 64):
        window = torch.randn(batch, WINDOW_FRAMES, model.config.in_features)
        fns["window"] = lambda: window_forward(model, window)
        fns["kwt"] = kwt_step(preset, model.config.in_features, batch)
    return fns


def kwt_step(preset: str, in_features: int, batch: int) -> Callable[[], None]:
    """One step of the KWT ``preset``, its window already full."""
    torch.manual_seed(0)
    kwt = KWT(KWTConfig.preset(preset, in_features=in_features)).eval()
    frame = torch.randn(batch, in_features)
    state = kwt.forward(torch.randn(batch, kwt.config.window, in_features))[1]
    return lambda: kwt.step(frame, state)


def main() -> None:
    args = timing.arguments(__doc__, "model_step", "few short rounds, batch 1 and 64 only (a smoke test)")
    rounds, block = (2, 0.01) if args.quick else (9, 0.2)
    batches = BATCHES[:2] if args.quick else BATCHES

    results = []
    for spiking in (False, True):
        for preset in ("tiny", "paper"):
            model = build(preset, spiking)
            for batch in batches:
                with torch.inference_mode():
                    seconds = timing.measure(candidates(model, preset, batch, args.quick), rounds, block)
                row = {"model": type(model).__name__, "preset": preset, "batch": batch,
                       "us_per_frame": {k: v * 1e6 / batch for k, v in seconds.items()},
                       "us_per_call": {k: v * 1e6 for k, v in seconds.items()},
                       "frames_per_s": {k: batch / v for k, v in seconds.items()}}
                results.append(row)
                print(f"{row['model']:>16} {preset:>5} batch {batch:>3}: " + "  ".join(
                    f"{k} {v:9.2f} us/frame" for k, v in row["us_per_frame"].items()), flush=True)

    names = ("engine", "eager", "window", "kwt", "floor")
    print("\nus per frame of one stream (batch 1: latency of a step; larger batches: call time / batch)")
    print(f"{'model':>16} {'preset':>6} {'batch':>5} " + " ".join(f"{n:>10}" for n in names)
          + f" {'engine fps':>11} {'floor fps':>10}")
    for r in results:
        cells = " ".join(f"{r['us_per_frame'][n]:>10.2f}" if n in r["us_per_frame"] else f"{'-':>10}" for n in names)
        print(f"{r['model']:>16} {r['preset']:>6} {r['batch']:>5} {cells} "
              f"{r['frames_per_s']['engine']:>11.0f} {r['frames_per_s']['floor']:>10.0f}")

    print("\ntargets, LMUFormer (ratio = numerator time / denominator time)")
    checks = []
    for label, num, den, preset, batch, minimum in TARGETS:
        r = next((r for r in results if r["model"] == "LMUFormer" and r["preset"] == preset and r["batch"] == batch), None)
        if r is None or num not in r["us_per_call"]:
            continue
        ratio = r["us_per_call"][num] / r["us_per_call"][den]
        met = ratio >= minimum
        checks.append({"target": label, "preset": preset, "batch": batch, "numerator": num, "denominator": den,
                       "ratio": ratio, "minimum": minimum, "met": met})
        print(f"  {label:<38} {preset:>5} batch {batch:>3}: {num}/{den} = {ratio:7.2f}"
              f"  (need >= {minimum:.2f}) {'ok' if met else 'MISSED'}")

    report = {"benchmark": "model_step", "quick": args.quick, "threads": 1, "window_frames": WINDOW_FRAMES,
              "machine": timing.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "results": results, "targets": checks}
    timing.write_report(report, args.out)


if __name__ == "__main__":
    main()
