"""``streamlmu`` command line: one subcommand per app, each with ``--help``.

Apps are imported only when chosen, so ``streamlmu --help`` stays fast. An app
module provides ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

APPS = {
    "lmu-demo": "streamlmu.apps.lmu_demo",
    "synth-speech-commands": "streamlmu.apps.synth_speech_commands",
    "train": "streamlmu.apps.train",
    "evaluate": "streamlmu.apps.evaluate",
    "listen": "streamlmu.apps.listen",
    "kws-eval": "streamlmu.apps.kws_eval",
    "truncation": "streamlmu.apps.truncation",
    "ensemble": "streamlmu.apps.ensemble",
    "synth-detection": "streamlmu.apps.synth_detection",
    "convert-visdrone": "streamlmu.apps.convert_visdrone",
    "detect-compress": "streamlmu.apps.detect_compress",
    "detect": "streamlmu.apps.detect",
    "continual": "streamlmu.apps.continual",
    "synth-captions": "streamlmu.apps.synth_captions",
    "caption-train": "streamlmu.apps.caption_train",
    "caption": "streamlmu.apps.caption",
    "serve": "streamlmu.apps.serve",
    "export": "streamlmu.apps.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlmu", description="Streaming Legendre Memory Units: apps and tools.")
    sub = parser.add_subparsers(dest="app", metavar="APP")
    for name, module_name in APPS.items():
        module = importlib.import_module(module_name)
        app = sub.add_parser(name, help=module.DESCRIPTION.splitlines()[0], description=module.DESCRIPTION,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(app)
        app.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.app is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"streamlmu {args.app}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
