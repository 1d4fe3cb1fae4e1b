"""``streamlmu train``: train a keyword-spotting model on a Speech Commands v2 layout."""
from __future__ import annotations

import argparse

import torch

from streamlmu.audio.frontend import FEATURE_KINDS
from streamlmu.data.speech_commands import LABEL_TASKS
from streamlmu.models.registry import MODEL_NAMES
from streamlmu.train.trainer import LOSSES, LR_SCHEDULES, TrainConfig, train

DESCRIPTION = """Train LMUFormer, Spiking LMUFormer or the KWT baseline on Speech Commands v2
(or the synthetic corpus of `streamlmu synth-speech-commands`), with the paper's recipe:
BCE, Adam, StepLR, SpecAugment, mixup. Validates every epoch; writes last.pt (resumable),
best.pt (for `streamlmu evaluate` and streamlmu.load_model), metrics.csv and TensorBoard
logs to --out. For several processes: torchrun --nproc_per_node=N -m streamlmu.apps.cli train ..."""


def _fraction_or_all(text: str) -> float | None:
    return None if text == "all" else float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig(data="")
    parser.add_argument("--data", required=True, help="corpus root in the SCv2 layout")
    parser.add_argument("--model", choices=MODEL_NAMES, default=d.model, help="architecture")
    parser.add_argument("--preset", default=d.preset, choices=("tiny", "paper"), help="model size")
    parser.add_argument("--features", choices=FEATURE_KINDS, default=d.features,
                        help="front end: fbank, the paper's 128-mel filterbank every 10 ms; speech-embedding, a "
                             "96-value embedding every 80 ms from a model pretrained on real speech; asr-encoder, 832 values "
                             "per 1 s window every 160 ms from Moonshine's speech-recognition encoder (the pretrained "
                             "ones are computed once per rendering of the data, see --feature-variants)")
    parser.add_argument("--feature-variants", type=int, default=d.feature_variants, metavar="N",
                        help="speech-embedding, asr-encoder: epochs cycle through N renderings of the training data (noise, "
                             "stream windows), each embedded once and kept in memory")
    parser.add_argument("--dim", type=int, default=None, help="model width, overriding the preset's (default: the preset's)")
    parser.add_argument("--lookahead", type=int, default=None,
                        help="LMUFormers: future frames each embedding convolution sees (default: 0, causal)")
    parser.add_argument("--labels", type=int, choices=LABEL_TASKS, default=d.labels,
                        help="35 words; 12: 10 words + unknown + silence; 37 (with --stream-windows): the 35 words + "
                             "unknown (the tail of a word) + silence")
    parser.add_argument("--unknown-fraction", type=_fraction_or_all, default=d.unknown_fraction,
                        help="12 labels: _unknown_ clips kept per keyword clip, or 'all'")
    parser.add_argument("--silence-fraction", type=float, default=d.silence_fraction,
                        help="12 labels: _silence_ clips added per keyword clip")
    parser.add_argument("--out", default=d.out, help="run folder for checkpoints and logs")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="total epochs (a resumed run counts the done ones)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per step and process")
    parser.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                        help="step: x--lr-gamma every --lr-step epochs; cosine: a cosine decay towards 0 over --epochs")
    parser.add_argument("--lr-step", type=int, default=d.lr_step, help="epochs between learning-rate decays")
    parser.add_argument("--lr-gamma", type=float, default=d.lr_gamma, help="learning-rate factor at each decay")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                        help="linear learning-rate warm-up over this many steps (0: none)")
    parser.add_argument("--ema", type=float, metavar="DECAY", default=d.ema,
                        help="validate and save an exponential moving average of the weights with this decay per "
                             "step (e.g. 0.999; default: the last step's weights)")
    parser.add_argument("--loss", choices=LOSSES, default=d.loss,
                        help="bce: the paper's binary cross-entropy; ce: softmax cross-entropy")
    parser.add_argument("--mixup", type=float, default=d.mixup_alpha, help="mixup Beta alpha (0: off)")
    parser.add_argument("--no-spec-augment", action="store_true", help="train without SpecAugment")
    parser.add_argument("--freq-warp", type=float, default=d.freq_warp, metavar="MAX",
                        help="vocal tract length perturbation: warp each clip's frequency axis by a factor from "
                             "[1 - MAX, 1 + MAX], e.g. 0.1 (0: off)")
    parser.add_argument("--stream-windows", action="store_true",
                        help="12 or 37 labels: train on stream excerpts labelled as a live spotter should answer at "
                             "their end")
    parser.add_argument("--hard-negatives", metavar="WORDS", default="",
                        help="with --stream-windows: comma-separated other words the spotter confuses with keywords "
                             "(e.g. dog,learn,nine), drawn for --hard-negative-fraction of the non-keyword windows")
    parser.add_argument("--hard-negative-fraction", type=float, default=d.hard_negative_fraction,
                        help="with --hard-negatives: the share of the non-keyword word windows that hold one")
    parser.add_argument("--word-heads", type=float, default=d.word_heads, metavar="FRACTION",
                        help="with --stream-windows: this share of the non-keyword word windows ends mid-word and "
                             "is labelled _unknown_, so that a keyword does not fire on the start of another word")
    parser.add_argument("--phrase-windows", type=int, default=d.phrase_windows, metavar="N",
                        help="with --stream-windows (12 labels): add N windows of whole sentences said by the "
                             "corpus's training speakers, keywords inside them, to every epoch")
    parser.add_argument("--init", metavar="CKPT", default=None,
                        help="start from this checkpoint's weights (every tensor whose name and shape match; of "
                             "the output layer, the rows of the labels both models have)")
    parser.add_argument("--teacher", metavar="CKPT", default=None,
                        help="distil from this trained model (same labels) on every training batch")
    parser.add_argument("--distill-weight", type=float, default=d.distill_weight,
                        help="weight of the distillation loss against the label loss (with --teacher)")
    parser.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                        help="softmax temperature of the distillation loss (with --teacher)")
    parser.add_argument("--bf16", action="store_true",
                        help="mixed precision: products and convolutions in bfloat16 (autocast), LIF membranes and "
                             "LMU memories in float32; validation and checkpoints stay float32. It made the spiking "
                             "model's steps 1.37x faster on a CPU with AMX (bench/train_step.py), but slower on one "
                             "without bfloat16 instructions (a warning says so)")
    parser.add_argument("--cache-audio", action="store_true",
                        help="keep the training clips in memory once read (64 kB per clip) instead of decoding "
                             "every file every epoch")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of every random choice")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--workers", type=int, default=d.workers, help="data-loading processes (0: in the main one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    parser.add_argument("--no-tensorboard", action="store_true", help="skip the TensorBoard logs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def model_overrides(args: argparse.Namespace) -> dict:
    """The preset fields that ``--dim`` and ``--lookahead`` change."""
    given = {"dim": args.dim, "lookahead": args.lookahead}
    return {name: value for name, value in given.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=args.data, model=args.model, preset=args.preset, labels=args.labels, out=args.out,
                      features=args.features, feature_variants=args.feature_variants,
                      unknown_fraction=args.unknown_fraction, silence_fraction=args.silence_fraction,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      lr_schedule=args.lr_schedule, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                      loss=args.loss, mixup_alpha=args.mixup,
                      spec_augment=not args.no_spec_augment, freq_warp=args.freq_warp, seed=args.seed,
                      workers=args.workers,
                      max_steps=args.max_steps, tensorboard=not args.no_tensorboard, init=args.init,
                      stream_windows=args.stream_windows,
                      hard_negatives=tuple(w.strip() for w in args.hard_negatives.split(",") if w.strip()),
                      hard_negative_fraction=args.hard_negative_fraction, word_heads=args.word_heads,
                      phrase_windows=args.phrase_windows,
                      teacher=args.teacher, distill_weight=args.distill_weight,
                      distill_temperature=args.distill_temperature, ema=args.ema, bf16=args.bf16,
                      cache_audio=args.cache_audio,
                      overrides=model_overrides(args))
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    if result["history"] and not args.quiet:
        last = result["history"][-1]
        print(f"done: {len(result['history'])} epochs, best validation accuracy {result['best_val_accuracy']:.4f}, "
              f"last {last['val_accuracy']:.4f}; checkpoints in {result['out']}")
    return 0
