"""Export a model's step, with its state as explicit inputs and outputs, to ONNX.

The file runs in any ONNX runtime: one call per frame, (x, state_in.*) -> (y, state_out.*), any batch of
streams; its metadata holds the state layout and initial values, the labels and the front-end settings.
The export is run in onnxruntime against the model's own step on random frames and is not written if they
disagree. --audio puts the model's filterbank before it, one 10 ms hop of samples per step (fbank models);
--spikes adds each spiking layer's spikes to the outputs. See streamlmu.export.
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
    parser.add_argument("--audio", action="store_true",
                        help="the file takes audio: the model's filterbank (HopFbank, one hop of samples per "
                             "step) before the model; fbank models only")
    parser.add_argument("--spikes", action="store_true",
                        help="also output the spikes of every LIF layer (spiking models)")


def run(args: argparse.Namespace) -> int:
    import sys
    from streamlmu import load_model
    from streamlmu.audio.features import FbankConfig, HopFbank
    from streamlmu.export import OnnxStream, to_onnx
    model = load_model(args.model)
    if args.audio:
        features = getattr(model, "features", None)
        if not isinstance(features, FbankConfig):
            raise ValueError(f"--audio needs a model on fbank features (the front end {args.model} takes is "
                             f"{getattr(features, 'kind', 'not recorded')}): export the model alone")
        model = HopFbank(features) | model
    path = to_onnx(model, args.out, check_steps=args.check_steps, atol=args.atol, pooling=args.pooling,
                   spikes=args.spikes)
    stream = OnnxStream(path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): frames of {list(stream.frame_shape)}, "
          f"{len(stream.layout)} state tensors, checked against step on {args.check_steps} frames", file=sys.stderr)
    return 0
