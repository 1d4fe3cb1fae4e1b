"""Export a model's step, with its state as explicit inputs and outputs, to ONNX.

The file runs in any ONNX runtime: one call per frame, (x, state_in.*) -> (y, state_out.*), any batch of
streams; its metadata holds the state layout and initial values, the labels and the front-end settings.
The export is run in onnxruntime against the model's own step on random frames and is not written if they
disagree. See streamlmu.export.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint file or bundled model name")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--check-steps", type=int, default=100, help="random frames the export is checked on")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest difference to step that is accepted")
    parser.add_argument("--pooling", default="mean", choices=("mean", "frame"),
                        help="mean: the model's own answer (the head on the mean features so far); frame: the head "
                             "on each frame, the logits a keyword spotter averages (streamlmu listen --onnx)")


def run(args: argparse.Namespace) -> int:
    import sys
    from streamlmu import load_model
    from streamlmu.export import OnnxStream, to_onnx
    path = to_onnx(load_model(args.model), args.out, check_steps=args.check_steps, atol=args.atol,
                   pooling=args.pooling)
    stream = OnnxStream(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): frames of {list(stream.frame_shape)}, "
          f"{len(stream.layout)} state tensors, checked against step on {args.check_steps} frames", file=sys.stderr)
    return 0
