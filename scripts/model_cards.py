"""Write the model card of every bundled model, ``streamlmu/pretrained/<name>.md``, from one template.

The measured figures come from ``streamlmu/pretrained/model_card.json`` (which the slow tests check against
the models); the words (intended use, data, the exact training command, limitations) from ``TEXT`` below.
Training histories and lab notes live in ``docs/models.md``.

Usage: ``python scripts/model_cards.py`` (writes the cards) or ``--check`` (exit 1 if a card is out of date).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from string import Template

FOLDER = Path(__file__).resolve().parents[1] / "streamlmu" / "pretrained"
MAX_LINES = 60

TEMPLATE = Template("""# $name

$summary

## Intended use

$use

## Data

$data

## Training

```sh
$command
```

$training

## Metrics

| measure | value |
| --- | --- |
$metrics

`pytest -m slow tests/test_pretrained.py` regenerates the test data and re-measures these figures.

## Limitations

$limitations

Training history and lab notes: `docs/models.md` in the repository.
""")

ESPEAK_DATA = ("`streamlmu synth-speech-commands --out data/scv2-synth` (espeak-ng only, 150 clips per word, seed 0): "
               "4,268 training, 472 validation, 510 test clips, split by speaker.")
DIVERSE_DATA = ("`streamlmu synth-speech-commands --out data/voices --clips-per-word 1000` (espeak-ng and Festival "
                "voices and personas, carrier phrases, simulated rooms, channels and noise; seed 0): 24,902 training, "
                "4,532 validation, 5,566 test clips.")
SPOTTER_USE = ("Continuous spotting of *yes, no, up, down, left, right, on, off, stop, go* in live audio with "
               "`StreamingKWS` (`streamlmu listen`, `kws-eval`): the model never resets; its per-frame logits are "
               "averaged over a sliding 1 s window, and the checkpoint carries calibrated thresholds.")
CLIP_USE_35 = ("Classifying 1 s clips into the 35 words of Speech Commands v2, streaming (one frame at a time) or "
               "offline, with identical answers.")
SYNTHETIC = "Trained and tested on synthetic speech only: expect lower accuracy on real voices."

TEXT: dict[str, dict[str, object]] = {
    "lmuformer-tiny-synth35": dict(
        summary="A causal LMUFormer (preset `tiny`, dim 48, memory order 64, θ = 128 frames) on the paper's 128-mel "
                "Kaldi filterbank (25 ms window, 10 ms hop), for the 35 words of Speech Commands v2.",
        use=CLIP_USE_35 + " The reference model of the paper's experiments and of `streamlmu truncation`.",
        data=ESPEAK_DATA,
        command="streamlmu train --model lmuformer --preset tiny --data data/scv2-synth --labels 35 --epochs 200 \\\n"
                "    --mixup 0 --threads 1",
        limitations=[SYNTHETIC + " On the diverse corpus's test split it scores 38.9 %.",
                     "The decision assumes a 1 s window that starts with the clip (the head averages every frame "
                     "since the last reset)."]),
    "spiking-lmuformer-tiny-synth35": dict(
        summary="The Spiking LMUFormer (preset `tiny` widened to dim 96, memory order 128; LIF neurons τ 2, "
                "threshold 1) on the filterbank, distilled from `lmuformer-tiny-synth35`.",
        use=CLIP_USE_35 + " Its synaptic operations show what neuromorphic hardware would spend.",
        data="The 8,471 training and 942 validation clips of `streamlmu synth-speech-commands --clips-per-word 300 "
             "--out data/scv2-synth-300` (espeak-ng; its speakers are in neither corpus's test split); tested on "
             "the 510 test clips of `data/scv2-synth`.",
        command="torchrun --nproc_per_node=2 -m streamlmu.apps.cli train --model spiking-lmuformer --preset tiny \\\n"
                "    --dim 96 --data data/scv2-synth-300 --labels 35 --epochs 102 --batch-size 32 --lr 5e-3 \\\n"
                "    --lr-schedule cosine --warmup-steps 500 --loss ce --mixup 0 --no-spec-augment --ema 0.999 \\\n"
                "    --teacher lmuformer-tiny-synth35 --threads 1 --bf16 --cache-audio --seed 2",
        limitations=[SYNTHETIC,
                     "A few spikes differ between the FFT training path and the engine, so offline and streaming "
                     "logits differ by up to 0.32 (no prediction on the test split changes).",
                     "Three runs of the recipe gave 94.7-95.7 %; one test clip is 0.2 points."]),
    "lmuformer-lookahead-tiny-synth35": dict(
        summary="`lmuformer-tiny-synth35` with one frame of look-ahead in each of its 5 embedding convolutions (the "
                "official models' receptive field): outputs lag the input by 5 frames (50 ms).",
        use="The look-ahead variant for `streamlmu truncation`; " + CLIP_USE_35[0].lower() + CLIP_USE_35[1:],
        data=ESPEAK_DATA,
        command="streamlmu train --model lmuformer --lookahead 1 --preset tiny --data data/scv2-synth --labels 35 \\\n"
                "    --epochs 120 --mixup 0 --threads 1",
        limitations=[SYNTHETIC, "Seeing 50 ms ahead did not help: the causal model scores 95.10 %."]),
    "kwt-tiny-synth35": dict(
        summary="The transformer baseline: a causal Keyword Transformer (2 blocks of dim 48, 2 heads, MLP 96) over a "
                "128-frame window of the filterbank. With no recurrent state it re-runs over every frame heard at "
                "each new frame; its MACs count that.",
        use="The baseline of the paper's comparison and of `streamlmu truncation`; "
            + CLIP_USE_35[0].lower() + CLIP_USE_35[1:],
        data=ESPEAK_DATA,
        command="streamlmu train --model kwt --preset tiny --data data/scv2-synth --labels 35 --epochs 120 \\\n"
                "    --mixup 0 --threads 1",
        limitations=[SYNTHETIC, "A frame with a full window costs 7.1 M MACs, 91 times the LMUFormer's."]),
    "lmuformer-tiny-synth12-kws": dict(
        summary="A causal LMUFormer (preset `tiny`, dim 96, memory order 64) on the filterbank for the 12-label task "
                "(the ten keywords, `_unknown_`, `_silence_`), trained on stream windows of espeak-ng speech.",
        use=SPOTTER_USE + " It meets the project's live-spotting target on espeak-ng streams.",
        data="Stream windows (`--stream-windows`) cut from `streamlmu synth-speech-commands --clips-per-word 300 "
             "--out data/scv2-synth-300` (espeak-ng only); test streams from the 510-clip split of `data/scv2-synth`.",
        command="torchrun --nproc_per_node=2 -m streamlmu.apps.cli train --model lmuformer --dim 96 --labels 12 \\\n"
                "    --stream-windows --data data/scv2-synth-300 --epochs 60 --batch-size 32 --lr 2.5e-3 \\\n"
                "    --lr-schedule cosine --warmup-steps 500 --mixup 0 --threads 1 --out runs/kws96\n"
                "# then four more stages, each --init <previous>/last.pt --lr 5e-4 --lr-schedule cosine:\n"
                "#   30 epochs; 30 epochs --seed 2; 30 epochs --seed 5 --word-heads 0.3 --bf16;\n"
                "#   20 epochs --seed 6 --word-heads 0.3 --bf16 --teacher <dim-128 spotter of the same stages>\n"
                "#   --distill-weight 0.5 --distill-temperature 2\n"
                "streamlmu kws-eval --model runs/kws96kd/last.pt --data data/scv2-synth --split validation \\\n"
                "    --calibrate 0.5 --min-threshold 0.95 --calibrate-minutes 720 --minutes 360 --save-thresholds ...",
        limitations=["Trained on espeak-ng alone: on the diverse corpus's test streams it finds 22.5 % of the keywords "
                     "at 16.5 false alarms per hour. Prefer `lmuformer-tiny-phrases12-kws` for people."]),
    "lmuformer-tiny-voices35": dict(
        summary="A causal LMUFormer (preset `tiny`, dim 96) on Google's speech embedding (96 values every 80 ms, "
                "pretrained on real speech), for the 35 words of Speech Commands v2.",
        use=CLIP_USE_35 + " Prefer it (or `lmuformer-tiny-piper35`) to the filterbank models for people's voices.",
        data=DIVERSE_DATA,
        command="streamlmu train --model lmuformer --features speech-embedding --dim 96 --labels 35 --epochs 60 \\\n"
                "    --lr-schedule cosine --loss ce --data data/voices --threads 2",
        limitations=[SYNTHETIC + " A held-out synthetic voice scores 59-87 % (`bench/results/voices.md`).",
                     "Other people talking behind the word (babble) costs most: 72.3 % of those test clips."]),
    "spiking-lmuformer-tiny-voices35": dict(
        summary="The Spiking LMUFormer (preset `tiny`, dim 96) on the speech embedding, distilled from "
                "`lmuformer-tiny-voices35`.",
        use=CLIP_USE_35,
        data=DIVERSE_DATA,
        command="streamlmu train --model spiking-lmuformer --features speech-embedding --dim 96 --labels 35 \\\n"
                "    --epochs 60 --lr-schedule cosine --loss ce --feature-variants 4 \\\n"
                "    --teacher lmuformer-tiny-voices35 --data data/voices --threads 1",
        limitations=[SYNTHETIC, "Five points below its non-spiking teacher on the diverse test split; a few spikes "
                                "flip between training and engine paths (logits differ by up to 0.68)."]),
    "lmuformer-tiny-engines35": dict(
        summary="`lmuformer-tiny-voices35`'s model and recipe on a corpus with DECtalk's nine voices besides "
                "espeak-ng's and Festival's.",
        use=CLIP_USE_35 + " One engine more in training gave a held-out voice of another engine 11 points.",
        data="`streamlmu synth-speech-commands --out data/engines --engines espeak-ng,festival,dectalk "
             "--clips-per-word 1000` (seed 0): 24,752 training, 4,604 validation, 5,644 test clips.",
        command="streamlmu train --model lmuformer --features speech-embedding --dim 96 --labels 35 --epochs 60 \\\n"
                "    --lr-schedule cosine --loss ce --data data/engines --threads 2",
        limitations=[SYNTHETIC, "It trades 0.7 points on the two-engine test split and 2.8 on the espeak-ng-only "
                                "one for voices it never heard."]),
    "lmuformer-tiny-piper35": dict(
        summary="`lmuformer-tiny-voices35`'s model and recipe on four engines: espeak-ng, Festival, DECtalk and "
                "Piper's neural voice `en_US-joe-medium`, learnt from one man's recordings.",
        use=CLIP_USE_35 + " The best bundled 35-word model on an engine none of them heard (Kokoro: 60.4 %, the "
                          "others 56.6-58.5 %).",
        data="`streamlmu synth-speech-commands --out data/four-engines --engines espeak-ng,festival,dectalk,piper "
             "--clips-per-word 1000` (seed 0): 25,090 training, 4,919 validation, 4,991 test clips.",
        command="streamlmu train --model lmuformer --features speech-embedding --dim 96 --labels 35 --epochs 60 \\\n"
                "    --lr-schedule cosine --loss ce --data data/four-engines --threads 1",
        limitations=[SYNTHETIC + " Accented neural voices (Kokoro, held out) score about 60 %.",
                     "With fewer espeak-ng clips in training it is 3.7 points below `lmuformer-tiny-voices35` on "
                     "the espeak-ng-only split."]),
    "lmuformer-tiny-asr35": dict(
        summary="A causal LMUFormer (preset `tiny`, dim 96) on Moonshine Base's speech-recognition encoder "
                "(pretrained on real speech; its states pooled over each 1 s window, one frame every 160 ms), "
                "trained on `lmuformer-tiny-engines35`'s corpus.",
        use=CLIP_USE_35 + " The bundled 35-word model that holds up best on engines none of them heard (700 "
                          "clips each: Piper 69.7 %, Kokoro 72.9 %; `lmuformer-tiny-engines35` 62.0 and 59.3 %), "
                          "at about 17 times the front end's cost. Needs `moonshine-cpp` (installed by `make "
                          "test` and `make demo`).",
        data="`streamlmu synth-speech-commands --out data/engines --engines espeak-ng,festival,dectalk "
             "--clips-per-word 1000` (seed 0): 24,752 training, 4,604 validation, 5,644 test clips.",
        command="streamlmu train --model lmuformer --features asr-encoder --dim 96 --labels 35 --epochs 30 \\\n"
                "    --lr-schedule cosine --loss ce --no-spec-augment --data data/engines",
        limitations=[SYNTHETIC + " Reverberant rooms cost a held-out voice the most (Kokoro: 84 % dry, 62-73 % in "
                                 "rooms).",
                     "A clip is one encoder window: the model decides once the whole second is heard; it has no "
                     "earlier, partial answer to give."]),
    "lmuformer-tiny-voices12-kws": dict(
        summary="A causal LMUFormer (preset `tiny`, dim 96) on the speech embedding for the 12-label task, "
                "fine-tuned on stream windows from `lmuformer-tiny-voices35`.",
        use=SPOTTER_USE + " The default spotter before `lmuformer-tiny-phrases12-kws`.",
        data=DIVERSE_DATA + " Stream windows and test streams are built from its splits.",
        command="streamlmu train --model lmuformer --features speech-embedding --dim 96 --labels 12 \\\n"
                "    --stream-windows --hard-negatives dog,learn,nine,tree,bed --word-heads 0.3 \\\n"
                "    --init lmuformer-tiny-voices35 --epochs 30 --lr 1e-3 --lr-schedule cosine \\\n"
                "    --feature-variants 1 --data data/voices\n"
                "streamlmu kws-eval --model <run>/best.pt --data data/voices --split validation --calibrate 1 \\\n"
                "    --min-threshold 0.95 --save-thresholds ...",
        limitations=["It misses the target (90 % at 2 false alarms per hour) on every corpus, and its short "
                     "keywords fare worst (*up* 13 %, *off* 3 % of the diverse test keywords).",
                     "Its calibrated thresholds sit at the grid's top (0.999): its false alarms are confident."]),
    "lmuformer-tiny-phrases12-kws": dict(
        summary="The default live spotter of `streamlmu listen`, `kws-eval` and `make demo`: "
                "`lmuformer-tiny-voices12-kws`'s recipe with 8,000 windows of whole sentences added to every epoch, "
                "so that it hears keywords inside phrases and ordinary speech around them.",
        use=SPOTTER_USE,
        data=DIVERSE_DATA + " Sentences said by the training speakers (`streamlmu.data.phrases`).",
        command="streamlmu train --model lmuformer --features speech-embedding --dim 96 --labels 12 \\\n"
                "    --stream-windows --hard-negatives dog,learn,nine,tree,bed --word-heads 0.3 \\\n"
                "    --init lmuformer-tiny-voices35 --epochs 30 --lr 1e-3 --lr-schedule cosine \\\n"
                "    --feature-variants 1 --phrase-windows 8000 --data data/voices\n"
                "streamlmu kws-eval --model <run>/last.pt --data data/voices --split validation --phrases \\\n"
                "    --calibrate 2 --min-threshold 0.95 --save-thresholds ...",
        limitations=["It misses the target (90 % at 2 false alarms per hour) everywhere; inside sentences it finds "
                     "*yes* (83 %) and few of *up*, *down*, *off*, *go*, said unstressed there.",
                     SYNTHETIC]),
}


def _percent(x: float) -> str:
    return f"{100 * x:.2f} %"


def _streams(e: dict) -> str:
    latency = f", median latency {1000 * e['median_latency_s']:.0f} ms" if "median_latency_s" in e else ""
    return (f"{100 * e['hit_rate']:.1f} % of {e['occurrences']:,} keywords at {e['false_alarms_per_hour']:g} false "
            f"alarms per hour ({60 * e['hours']:.0f} min of streams){latency}")


def metric_rows(f: dict) -> list[tuple[str, str]]:
    """The card's metrics table from the figures in ``model_card.json``."""
    frame = f.get("frame_ms", 10)
    rows = [("size", f"{f['parameters']:,} parameters; {f['macs_per_frame']:,} MACs per {frame} ms frame"
             + (f"; {f['synops_per_frame']:,} synaptic operations per frame" if "synops_per_frame" in f else ""))]
    if "val_accuracy" in f:
        where = "validation windows" if "kws_eval" in f else "validation clips"
        rows.append(("selection", f"{_percent(f['val_accuracy'])} on the {where}, epoch {f['selected_epoch']} "
                                  f"of {f['epochs']}"))
    if "test_accuracy_streaming" in f:
        n = round(f["test_accuracy_streaming"] * f["test_clips"])
        rows.append(("**test accuracy, streaming**",
                     f"**{_percent(f['test_accuracy_streaming'])}** ({n:,} / {f['test_clips']:,} clips)"))
        rows.append(("test accuracy, offline", _percent(f["test_accuracy_offline"])))
    if "test_accuracy_by_engine" in f:
        rows.append(("test accuracy by engine", ", ".join(f"{k} {100 * v:.1f} %"
                                                          for k, v in f["test_accuracy_by_engine"].items())))
    for key, label in (("voices_corpus", "two-engine (diverse) test split"),
                       ("engines_corpus", "three-engine test split"), ("espeak_corpus", "espeak-ng-only test split")):
        if f"{key}_test_accuracy" in f:
            rows.append((label, f"{_percent(f[f'{key}_test_accuracy'])} of {f[f'{key}_test_clips']:,} clips"))
    if "thresholds" in f:
        values = sorted(set(f["thresholds"].values()))
        rows.append(("thresholds", f"{values[0]:g} for every keyword" if len(values) == 1 else
                     ", ".join(f"{k} {v:g}" for k, v in f["thresholds"].items())))
    for key, label in (("validation", "validation streams (calibration)"), ("kws_eval", "**test streams**"),
                       ("espeak_corpus_kws_eval", "espeak-ng-only test streams"),
                       ("phrases_kws_eval", "phrase test streams")):
        if key in f:
            rows.append((label, _streams(f[key])))
    return rows


def render(name: str, figures: dict) -> str:
    text = TEXT[name]
    training = f"{figures['training_minutes']:g} min of training on a 2-core CPU machine"
    if "init" in figures:
        training += f", starting from `{figures['init']}`"
    return TEMPLATE.substitute(
        name=name, summary=text["summary"], use=text["use"], data=text["data"], command=text["command"],
        training=training + ".",
        metrics="\n".join(f"| {label} | {value} |" for label, value in metric_rows(figures)),
        limitations="\n".join(f"- {line}" for line in text["limitations"]))


def cards() -> dict[Path, str]:
    figures = json.loads((FOLDER / "model_card.json").read_text())
    return {FOLDER / f"{name}.md": render(name, figures[name]) for name in TEXT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a card differs from what would be written")
    args = parser.parse_args(argv)
    stale = [path for path, text in cards().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.name} (run python scripts/model_cards.py)")
        return 1 if stale else 0
    for path, text in cards().items():
        path.write_text(text)
    print(f"wrote {len(cards())} model cards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
