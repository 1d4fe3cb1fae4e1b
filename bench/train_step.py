"""Benchmark of one distilled training step on a batch of clips, side by side in one run, on one thread.

A batch of 64 clips of 128 frames (the trainer's default) through:

* ``teacher_kernels``  a tiny LMUFormer without autograd on the frame-exact
                       Numba kernels (what a teacher cost before ``batched_torch``);
* ``teacher_batched``  the same under :func:`streamlmu.nn.inference.batched_torch`
                       (BLAS products, FFT memory): what the trainer runs;
* ``student``          the forward and backward pass of the Spiking LMUFormer
                       (``tiny`` at dim 96, the bundled one's size);
* ``teacher_bf16``, ``student_bf16``  the batched teacher and the student under
                       bfloat16 autocast (``streamlmu train --bf16``).

Random weights with trained-like BatchNorm statistics (the cost does not depend
on the values). Reports milliseconds per batch, the teacher speed-up and the
share of a distilled step (teacher + student) the teacher takes on each path,
and the speed-up of a distilled step under bfloat16 autocast (no target: it
depends on the CPU's bfloat16 units). Target: the batched teacher >= 5x faster
than the kernel one. Prints a table and writes ``bench/results/train_step.json``.

Usage: ``python bench/train_step.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import time
from typing import Callable

import torch

from streamlmu.models import LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.nn.inference import batched_torch
from streamlmu.testing import randomize_batchnorm

BATCH, FRAMES = 64, 128
TARGET_SPEEDUP = 5.0


def candidates() -> dict[str, Callable[[], object]]:
    """The timed callables; all read the same batch."""
    torch.manual_seed(0)
    teacher = randomize_batchnorm(LMUFormer(LMUFormerConfig.preset("tiny")).eval(), False)
    student = randomize_batchnorm(SpikingLMUFormer(LMUFormerConfig.preset("tiny", spiking=True, dim=96)), True)
    student.train()
    x = torch.randn(BATCH, FRAMES, 128, generator=torch.Generator().manual_seed(1))

    def teacher_kernels() -> torch.Tensor:
        with torch.no_grad():
            return teacher(x)[0]

    def teacher_batched() -> torch.Tensor:
        with torch.no_grad(), batched_torch():
            return teacher(x)[0]

    def teacher_bf16() -> torch.Tensor:
        with torch.no_grad(), batched_torch(), torch.autocast("cpu", dtype=torch.bfloat16):
            return teacher(x)[0]

    def student_step() -> None:
        student.zero_grad(set_to_none=True)
        student(x)[0][:, -1].logsumexp(1).mean().backward()

    def student_bf16() -> None:
        student.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = student(x)[0]
        logits[:, -1].logsumexp(1).mean().backward()

    return {"teacher_kernels": teacher_kernels, "teacher_batched": teacher_batched, "student": student_step,
            "teacher_bf16": teacher_bf16, "student_bf16": student_bf16}


def main() -> None:
    args = timing.arguments(__doc__, "train_step")
    rounds, block = (2, 0.05) if args.quick else (9, 1.0)
    ms = {name: s * 1e3 for name, s in timing.measure(candidates(), rounds, block).items()}

    print(f"one distilled training step, one thread, batch {BATCH} x {FRAMES} frames, float32 unless bf16 (median ms)")
    for name, value in ms.items():
        print(f"  {name:<16} {value:8.1f}")
    speedup = ms["teacher_kernels"] / ms["teacher_batched"]
    shares = {path: ms[f"teacher_{path}"] / (ms[f"teacher_{path}"] + ms["student"]) for path in ("kernels", "batched")}
    met = speedup >= TARGET_SPEEDUP
    bf16_speedup = (ms["teacher_batched"] + ms["student"]) / (ms["teacher_bf16"] + ms["student_bf16"])
    print(f"teacher share of a step: {shares['kernels']:.0%} on the kernels, {shares['batched']:.0%} batched")
    print(f"a distilled step under bfloat16 autocast: {bf16_speedup:.2f}x as fast as float32")
    print(f"target: batched teacher >= {TARGET_SPEEDUP:.0f}x faster: {speedup:.1f}x {'ok' if met else 'MISSED'}")

    report = {"benchmark": "train_step", "quick": args.quick, "threads": 1, "batch": BATCH, "frames": FRAMES,
              "machine": timing.machine(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "ms_per_batch": ms,
              "teacher_share": shares, "bf16_step_speedup": bf16_speedup,
              "targets": [{"target": "batched teacher vs kernel teacher", "ratio": speedup,
                           "minimum": TARGET_SPEEDUP, "met": met}]}
    timing.write_report(report, args.out)


if __name__ == "__main__":
    main()
