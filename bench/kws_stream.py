"""Benchmark of live keyword spotting: compute per 10 ms hop for 1, 16 and 256 concurrent streams, on one thread.

For the ``paper`` and ``tiny`` LMUFormer presets (random weights with
trained-like BatchNorm statistics: the cost does not depend on the values) it
times, side by side in one run:

* ``spotter``  :class:`StreamingKWS` end to end: 100 ms chunks of audio in,
               streaming fbank, one engine step per hop for all streams,
               window mean, softmax, detector;
* ``int8``     the same spotter with the engine's dense layers as int8
               products (``int8_min_batch=1``);
* ``window``   what a user of a non-streaming model does every hop: fbank of
               the last 1 s and the parallel forward over it (98 frames padded
               to 128, the official input);
* ``products`` the float32 matrix products of one engine frame alone (every
               dense layer and the Legendre update, on the BLAS the engine
               calls): the ceiling of the float32 spotter on this machine.

Per hop and stream count it reports milliseconds, the real-time factor
(compute / audio time; below 1 keeps up) and real-time streams per core
(``streams / RTF``), for the float32 and the int8 spotter and the products alone. Target: >= 300
concurrent real-time streams per core with the paper-size model. Prints a table and writes ``bench/results/kws_stream.json``.

Usage: ``python bench/kws_stream.py [--quick] [--out PATH]``
"""
from __future__ import annotations

import timing  # noqa: F401  (first: pins the thread pools to one thread)

import numpy as np
import torch

from streamlmu.audio.features import FbankConfig
from streamlmu.audio.frontend import clip_features
from streamlmu.audio.kws import StreamingKWS
from streamlmu.data.speech_commands import WORDS_35
from streamlmu.kernels import engine as ops
from streamlmu.models import LMUFormer, LMUFormerConfig
from streamlmu.testing import randomize_batchnorm

HOP_S = 0.01
CHUNK_HOPS = 10
STREAMS = (1, 16, 256)
TARGET_STREAMS_PER_CORE = 300


def build(preset: str) -> LMUFormer:
    model = randomize_batchnorm(LMUFormer(LMUFormerConfig.preset(preset)), spiking=False).eval()
    model.labels, model.features = WORDS_35, FbankConfig()
    return model


def spotter_call(model: LMUFormer, streams: int, int8: bool = False, seconds: float = 4.0):
    """One call feeds every stream ``CHUNK_HOPS`` hops of noise-like audio (cycling through ``seconds``)."""
    kws = StreamingKWS(model, streams=streams, int8_min_batch=1 if int8 else None)
    audio = (np.random.default_rng(0).standard_normal((streams, int(seconds * 16000))) * 0.1).astype(np.float32)
    chunk = CHUNK_HOPS * 160
    position = [0]

    def call() -> None:
        start = position[0]
        kws.accept_waveform(audio[:, start:start + chunk])
        position[0] = (start + chunk) % audio.shape[1]
    return call


def window_call(model: LMUFormer, streams: int):
    """One hop of the sliding-window baseline: features of the last 1 s and the whole forward."""
    audio = torch.randn(streams, 16000) * 0.1
    features = model.features

    def call() -> None:
        with torch.inference_mode():
            model.classify(clip_features(audio, features))
    return call


def products_call(model: LMUFormer, streams: int):
    """One frame's float32 matrix products for every stream: ``(streams, K) @ (K, N)`` per dense layer and the
    ``(streams, order) @ (order, order)`` Legendre update, shapes read from the compiled program."""
    program = model.streaming(pooling="frame").program
    shapes = [(k, n) for code, _, k, _, n, *_ in program.ops.tolist() if code == ops.LINEAR]
    shapes += [(order, order) for code, _, order, *_ in program.ops.tolist() if code == ops.MEMORY]
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal((streams, k), np.float32), rng.standard_normal((k, n), np.float32),
               np.empty((streams, n), np.float32)) for k, n in shapes]

    def call() -> None:
        for x, w, out in arrays:
            np.dot(x, w, out)
    return call


def main(argv: list[str] | None = None) -> dict:
    args = timing.arguments(__doc__, "kws_stream", "short timing blocks (a smoke run)", argv=argv)
    rounds, block = (1, 0.05) if args.quick else (5, 0.6)
    rows = []
    for preset in ("paper", "tiny"):
        model = build(preset)
        for streams in STREAMS:
            fns = {"spotter": spotter_call(model, streams), "int8": spotter_call(model, streams, int8=True),
                   "products": products_call(model, streams)}
            if not (args.quick and streams > 16):
                fns["window"] = window_call(model, streams)
            seconds = timing.measure(fns, rounds, block)
            hop = {"spotter": seconds["spotter"] / CHUNK_HOPS, "int8": seconds["int8"] / CHUNK_HOPS,
                   "window": seconds.get("window"), "products": seconds["products"]}
            rtf, rtf_int8 = hop["spotter"] / HOP_S, hop["int8"] / HOP_S
            rows.append({"preset": preset, "streams": streams, "spotter_ms_per_hop": hop["spotter"] * 1e3,
                         "int8_ms_per_hop": hop["int8"] * 1e3,
                         "window_ms_per_hop": hop["window"] * 1e3 if hop["window"] else None,
                         "products_ms_per_hop": hop["products"] * 1e3,
                         "rtf": rtf, "streams_per_core": streams / rtf, "int8_streams_per_core": streams / rtf_int8,
                         "products_streams_per_core": streams * HOP_S / hop["products"],
                         "window_vs_spotter": hop["window"] / hop["spotter"] if hop["window"] else None})
    print(f"{'preset':<6} {'streams':>7} {'spotter ms/hop':>15} {'RTF':>8} {'streams/core':>13} "
          f"{'int8 ms/hop':>12} {'int8 str/core':>14} {'products str/core':>18} {'window ms/hop':>14} "
          f"{'window/spotter':>15}")
    for r in rows:
        window = f"{r['window_ms_per_hop']:14.3f}" if r["window_ms_per_hop"] else f"{'-':>14}"
        ratio = f"{r['window_vs_spotter']:15.1f}" if r["window_vs_spotter"] else f"{'-':>15}"
        print(f"{r['preset']:<6} {r['streams']:>7} {r['spotter_ms_per_hop']:15.3f} {r['rtf']:8.4f} "
              f"{r['streams_per_core']:13.0f} {r['int8_ms_per_hop']:12.3f} {r['int8_streams_per_core']:14.0f} "
              f"{r['products_streams_per_core']:18.0f} {window} {ratio}")
    paper = [r for r in rows if r["preset"] == "paper"]
    best = max(r["streams_per_core"] for r in paper)
    best_int8 = max(r["int8_streams_per_core"] for r in paper)
    ceiling = max(r["products_streams_per_core"] for r in paper)
    for name, value in (("float32", best), ("int8", best_int8)):
        verdict = "met" if value >= TARGET_STREAMS_PER_CORE else "MISSED"
        print(f"target: >= {TARGET_STREAMS_PER_CORE} real-time paper-size streams per core, {name}: "
              f"{value:.0f} ({verdict})")
    print(f"the float32 matrix products alone allow {ceiling:.0f} paper-size streams per core here")
    machine = timing.machine()
    print(f"CPU: {machine['cpu']}; int8 dot-product instructions: "
          f"{ {True: 'yes', False: 'none', None: 'unknown'}[machine['int8_dot_instructions']]}")
    result = {"machine": machine, "rows": rows, "paper_streams_per_core": best,
              "paper_streams_per_core_int8": best_int8, "paper_products_streams_per_core": ceiling,
              "target_streams_per_core": TARGET_STREAMS_PER_CORE,
              "target_met": max(best, best_int8) >= TARGET_STREAMS_PER_CORE}
    timing.write_report(result, args.out)
    return result


if __name__ == "__main__":
    main()
