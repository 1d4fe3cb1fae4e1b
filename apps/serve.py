"""Serve keyword spotting to many live streams over WebSocket, with a browser page.

One WebSocket per stream at /v1/kws (protocol: docs/protocol.md); GET / is a page that streams the
microphone and shows the level, the top label and the events. By default one process (FastAPI on uvicorn)
steps every live stream in one engine call per tick; --ray runs the same app as a Ray Serve deployment
with --replicas replicas (a local Ray by default, a cluster with --address). Ctrl-C closes every stream
with a closing message.
"""
from __future__ import annotations

import argparse

from streamlmu.pretrained import DEFAULT_KWS_MODEL

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from streamlmu.serve.service import ServeOptions
    defaults = ServeOptions()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--model", default=DEFAULT_KWS_MODEL, help="checkpoint file or bundled spotter name")
    parser.add_argument("--keywords", default=None, help="comma-separated labels that may fire (default: the "
                                                         "model's calibrated keywords)")
    parser.add_argument("--threshold", type=float, default=None, help="one threshold for every keyword (default: "
                                                                      "the model's calibrated ones)")
    parser.add_argument("--token", default=None, help="a secret every client must give (?token= or the hello's "
                                                      "token field); default: none")
    parser.add_argument("--max-streams", type=int, default=defaults.max_streams,
                        help="streams held at once per process; more are refused with close code 1013")
    parser.add_argument("--max-busy", type=float, default=defaults.max_busy,
                        help="refuse new streams (1013) while the engine spends more than this share of its time "
                             "stepping streams (one more would not keep real time)")
    parser.add_argument("--max-message-kb", type=int, default=defaults.max_message_bytes // 1024,
                        help="largest binary message (KiB); larger ones close the stream with code 1009")
    parser.add_argument("--grace", type=float, default=defaults.grace_s, metavar="SECONDS",
                        help="how long a dropped stream keeps its state for its client to reconnect")
    parser.add_argument("--threads", type=int, default=1, help="threads of the engine (torch) and of a "
                                                               "speech-embedding front end (onnxruntime)")
    parser.add_argument("--ray", action="store_true", help="run on Ray Serve instead of one uvicorn process")
    parser.add_argument("--address", default=None, help="--ray: an existing Ray cluster (default: start one here)")
    parser.add_argument("--replicas", type=int, default=2, help="--ray: replicas to start with, and the most")
    parser.add_argument("--min-replicas", type=int, default=1,
                        help="--ray: the fewest replicas autoscaling keeps (on open streams per replica)")


def options(args: argparse.Namespace):
    from streamlmu.serve.service import ServeOptions
    return ServeOptions(max_streams=args.max_streams, max_busy=args.max_busy,
                        max_message_bytes=args.max_message_kb * 1024, grace_s=args.grace, token=args.token)


def run(args: argparse.Namespace) -> int:
    import torch
    torch.set_num_threads(args.threads)
    keywords = tuple(k.strip() for k in args.keywords.split(",") if k.strip()) if args.keywords else None
    if args.ray:
        from streamlmu.serve.scale import run_ray
        return run_ray(args.model, keywords, args.threshold, options(args), args.host, args.port, args.replicas,
                       args.min_replicas, args.address)
    from streamlmu.serve.server import run_server
    return run_server(args.model, keywords, args.threshold, options(args), args.host, args.port, args.threads)
