"""``streamlmu listen``: spot keywords live in a microphone, sound files or raw PCM on stdin."""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import torch

from streamlmu.audio import verify
from streamlmu.audio.kws import DEFAULT_WARMUP_S, StreamingKWS
from streamlmu.pretrained import DEFAULT_KWS_MODEL
from streamlmu.audio.sources import FileSource, MicrophoneSource, PCMSource, input_devices

DESCRIPTION = """Spot keywords in real time. Reads the microphone (default), sound files, or raw PCM
on stdin ('-'); resamples to 16 kHz and mixes to mono. Prints one JSON line per detection on
stdout ({"t", "keyword", "score", "source"}); on a terminal, stderr shows a live line with the
top label, its score and an input level meter. Ctrl-C stops with a summary."""

DEMO = "demo"  # the bundled demo recording (streamlmu/pretrained/demo-keywords.wav)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help=f"sound files, '-' for raw PCM on stdin, or '{DEMO}' for the bundled recording "
                             f"(none: the microphone)")
    parser.add_argument("--model", default=DEFAULT_KWS_MODEL, help="checkpoint file or bundled model name")
    parser.add_argument("--onnx", default=None, metavar="FILE",
                        help="run the model from this export instead (streamlmu export --pooling frame) in "
                             "onnxruntime; --model is then ignored")
    parser.add_argument("--keywords", default=None,
                        help="comma-separated labels that may fire (default: the model's calibrated keywords, else "
                             "every word)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="smoothed posterior a keyword must reach (default: the model's calibrated thresholds, "
                             "else 0.95)")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, metavar="SECONDS",
                        help="no keyword fires in the first SECONDS of each input, while the model's state fills "
                             "(0 for clips that start with their word)")
    parser.add_argument("--device", default=None, help="input device index or name (see --list-devices)")
    parser.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    parser.add_argument("--realtime", action="store_true", help="pace files at the speed of the audio")
    parser.add_argument("--seconds", type=float, default=None, help="stop the microphone after this long")
    parser.add_argument("--rate", type=int, default=16000, help="sample rate of raw PCM on stdin")
    parser.add_argument("--channels", type=int, default=1, help="channels of raw PCM on stdin")
    parser.add_argument("--pcm-dtype", default="int16", choices=("int16", "int32", "float32"),
                        help="sample type of raw PCM on stdin")
    parser.add_argument("--int8", action="store_true",
                        help="run the model's dense layers as int8 products (faster for many streams on a CPU "
                             "with VNNI or AMX int8 instructions, far slower without)")
    add_verifier_arguments(parser)
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per read")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (one suits the small per-hop work of streaming)")
    parser.add_argument("--quiet", action="store_true", help="no live line and no summary on stderr")


def add_verifier_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verifier", default=None, metavar="MODEL",
                        help="a clip classifier (checkpoint or bundled name, e.g. lmuformer-tiny-synth35) that must "
                             "confirm each detection on the second of audio that ends --verify-delay after it")
    parser.add_argument("--verify-delay", type=float, default=verify.DEFAULT_DELAY_S, metavar="SECONDS",
                        help="wait this long after a detection before verifying it (adds to the latency)")
    parser.add_argument("--verify-threshold", type=float, default=verify.DEFAULT_THRESHOLD, metavar="P",
                        help="the verifier's posterior of the keyword a detection needs to be kept")


def verifier_options(args: argparse.Namespace) -> dict:
    """StreamingKWS keyword arguments for the second stage the arguments ask for."""
    if args.verifier is None:
        return {}
    return {"verifier": args.verifier, "verify_delay_s": args.verify_delay, "verify_threshold": args.verify_threshold}


def _meter(level: float, width: int = 20) -> str:
    """An input-level bar from -60 to 0 dBFS."""
    db = 20 * np.log10(max(level, 1e-6))
    filled = int(np.clip((db + 60) / 60, 0, 1) * width)
    return "#" * filled + "-" * (width - filled) + f" {db:6.1f} dBFS"


def _compare_with_demo_truth(heard: list[str], keywords: tuple[str, ...]) -> None:
    from streamlmu.pretrained import DEMO_TRUTH
    words = [w["word"] for w in json.loads(DEMO_TRUTH.read_text())["words"]]
    spoken = [w for w in words if w in keywords]
    print(f"demo recording: words spoken {' '.join(words)}\n  keywords among them: {' '.join(spoken) or '-'}\n"
          f"  detected:            {' '.join(heard) or '-'}", file=sys.stderr)


def _sources(args: argparse.Namespace) -> list:
    from streamlmu.pretrained import DEMO_RECORDING
    chunk = args.chunk_ms / 1000
    if not args.inputs:
        device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
        return [MicrophoneSource(device, chunk_s=chunk, max_seconds=args.seconds)]
    sources = []
    for name in args.inputs:
        if name == "-":
            sources.append(PCMSource(None, args.rate, args.channels, args.pcm_dtype, chunk))
        else:
            source = FileSource(DEMO_RECORDING if name == DEMO else name, chunk, args.realtime)
            source.name = name
            sources.append(source)
    return sources


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.list_devices:
        for d in input_devices():
            print(f"{d['index']:>3}  {d['name']}  ({d['channels']} channels, {d['default_rate']} Hz)")
        return 0
    keywords = tuple(k.strip() for k in args.keywords.split(",") if k.strip()) if args.keywords else None
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0 seconds (got {args.warmup})")
    options = {"int8_min_batch": 1 if args.int8 else None, "warmup_s": args.warmup, **verifier_options(args)}
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.onnx is not None:
        from streamlmu.export import OnnxKeywordModel
        kws = StreamingKWS(OnnxKeywordModel(args.onnx), keywords=keywords, **options)
    else:
        kws = StreamingKWS.from_pretrained(args.model, keywords=keywords, **options)
    live = not args.quiet and sys.stderr.isatty()
    sources = _sources(args)
    lost = 0
    try:
        for source in sources:
            kws.reset()
            heard = []
            for chunk, rate in source:
                kws.accept_waveform(chunk, rate)
                for event in kws.poll_events():
                    if live:
                        sys.stderr.write("\r\033[K")
                    heard.append(event.keyword)
                    print(json.dumps({**event.to_dict(), "source": source.name}), flush=True)
                if live:
                    label, score = kws.top()
                    level = float(np.abs(chunk).max()) if len(chunk) else 0.0
                    sys.stderr.write(f"\r\033[K{kws.stream_time():8.2f} s  {label:>10} {score:5.2f}  {_meter(level)}")
                    sys.stderr.flush()
                if source.overflows > lost:
                    warnings.warn(f"{source.name}: the input dropped audio ({source.overflows - lost} buffer "
                                  f"overflow(s)); detections around them may be missed", stacklevel=1)
                    lost = source.overflows
            if source.name == DEMO and not args.quiet:
                _compare_with_demo_truth(heard, kws.keywords)
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            sys.stderr.write("\r\033[K")
        if not args.quiet:
            s = kws.stats
            print(f"listened to {s.audio_seconds:.1f} s of audio: {s.events} event(s), {s.frames} hops, compute per "
                  f"hop mean {kws.hop_seconds.mean * 1e3:.3f} ms, p99 {kws.hop_seconds.quantile(0.99) * 1e3:.3f} ms"
                  + (f", {lost} input overflow(s)" if lost else "")
                  + (f", {kws.stats.rejected_events} rejected by the verifier" if kws.verifier else "")
                  + (f", {s.clipped_samples} clipped sample(s)" if s.clipped_samples else ""), file=sys.stderr)
    return 0
