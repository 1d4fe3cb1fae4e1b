"""Benchmark of exported steps: one frame through the streaming engine, onnxruntime and ``model.step``.

For the bundled LMUFormer and Spiking LMUFormer (fbank, 35 words) it exports the step with
``streamlmu.export.to_onnx`` and times, side by side in one run on one thread, one frame for 1 stream and for
64 streams at once:

* ``engine``      ``model.streaming()``: the Numba engine (what ``StreamingKWS`` runs);
* ``onnxruntime`` the exported file in ``OnnxStream`` (onnxruntime, one thread), state fed back each call;
* ``step``        ``model.step`` (Numba kernels per layer).

and the filterbank, ``HopFbank`` (one 10 ms hop of samples per step; ``streamlmu export --audio`` puts it before
a model): ``engine`` is then ``StreamingFbank`` on the hop (torch's FFT, what the spotter runs), ``step``
``HopFbank.step``; the export computes the spectrum as a product with the DFT matrix.

Reports microseconds per frame (batch 1) and per stream-frame (batch 64) and the file size. Prints a table
and writes ``bench/results/export.json``.

Usage: ``python bench/export.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import tempfile
from pathlib import Path

import torch

from streamlmu import load_model
from streamlmu.audio.features import HopFbank, StreamingFbank
from streamlmu.export import OnnxStream, to_onnx

MODELS = ("lmuformer-tiny-synth35", "spiking-lmuformer-tiny-synth35")


def _runner(step, state):
    """A closure that calls ``step(frame, state)`` and keeps the new state (a stream going on)."""
    box = [state]

    def call(frame):
        _, box[0] = step(frame, box[0])
    return call


def _model(name: str, tmp: str):
    """The export of a bundled model and, per batch, a frame and the three calls to time."""
    model = load_model(name)
    path = to_onnx(model, Path(tmp) / f"{name}.onnx")
    exported = OnnxStream(path, threads=1)

    def calls(batch: int):
        engine = model.streaming()
        return torch.randn(batch, model.config.in_features), {
            "engine": _runner(engine.step, engine.init_state(batch)),
            "onnxruntime": _runner(exported.step, exported.init_state(batch)),
            "step": _runner(model.step, model.init_state(batch))}
    return path, calls


def _filterbank(tmp: str):
    op, fbank = HopFbank(), StreamingFbank()
    path = to_onnx(op, Path(tmp) / "filterbank.onnx")
    exported = OnnxStream(path, threads=1)

    def calls(batch: int):
        return 0.1 * torch.randn(batch, op.config.hop), {
            "engine": _runner(fbank.forward, fbank.init_state(batch)),
            "onnxruntime": _runner(exported.step, exported.init_state(batch)),
            "step": _runner(op.step, op.init_state(batch))}
    return path, calls


def main(argv: list[str] | None = None) -> int:
    args = timing.arguments(__doc__, "export", argv=argv)
    rounds, block = (2, 0.05) if args.quick else (7, 0.4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        cases = [(name, _model(name, tmp)) for name in MODELS] + [("filterbank", _filterbank(tmp))]
        for name, (path, calls_for) in cases:
            for batch in (1, 64):
                frame, calls = calls_for(batch)
                seconds = timing.measure({k: (lambda f=f: f(frame)) for k, f in calls.items()}, rounds, block)
                us = {k: v / batch * 1e6 for k, v in seconds.items()}
                rows.append({"model": name, "batch": batch, "us_per_stream_frame": us,
                             "file_mb": path.stat().st_size / 1e6})
                print(f"{name:34s} batch {batch:3d}  " + "  ".join(f"{k} {v:8.1f} us" for k, v in us.items())
                      + f"  ({path.stat().st_size / 1e6:.2f} MB)")
    timing.write_report({"machine": timing.machine(), "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
