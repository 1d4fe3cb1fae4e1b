"""Train a LightCap-style captioner in stages: CLIP (contrastive, unless --clip-weights), teacher, student.

Each stage writes its result into OUT (clip.pt, teacher.pt, student.pt) and is skipped when that file is
there, so an interrupted run resumes at the stage it was in. The student learns from the references and is
distilled from the teacher's word distributions (and, with their weights, its hidden states and attention maps).
At the end OUT/report.json holds BLEU-4, METEOR, ROUGE-L and CIDEr-D of teacher and student on the validation
split, their parameters and sample captions. See streamlmu.vision.caption and docs/vision.md.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a caption file in the Karpathy split format (captions.json "
                        "of streamlmu synth-captions, or COCO's dataset_coco.json)")
    parser.add_argument("--images", default=None, help="the folder the file's image paths start from "
                        "(default: the file's folder)")
    parser.add_argument("--out", default="runs/caption", help="folder for the stages' checkpoints and report.json")
    parser.add_argument("--clip", default="small", help="CLIP architecture: small (ours) or an open_clip model name")
    parser.add_argument("--clip-weights", default=None, help="an open_clip checkpoint of --clip's architecture "
                        "(then CLIP is not trained)")
    parser.add_argument("--clip-epochs", type=int, default=10)
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--concepts", type=int, default=20, help="K concepts per image (0: no concept extractor, "
                        "no modulator)")
    parser.add_argument("--concept-epochs", type=int, default=10, help="epochs of the concept head alone on CLIP's "
                        "image embeddings before each captioner trains (0: none)")
    parser.add_argument("--no-modulator", action="store_true")
    parser.add_argument("--no-distillation", action="store_true", help="train the student on the references only")
    parser.add_argument("--token-weight", type=float, default=1.0, help="distillation of the teacher's word "
                        "distributions (KL)")
    parser.add_argument("--hidden-weight", type=float, default=0.0, help="distillation of its hidden states (MSE)")
    parser.add_argument("--attention-weight", type=float, default=0.0, help="distillation of its attention maps "
                        "(MSE)")
    parser.add_argument("--temperature", type=float, default=1.0, help="of the word distributions' KL")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the GPU if there is one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from streamlmu.vision.caption.stages import CaptionStages
    from streamlmu.vision.caption.training import TrainConfig
    if min(args.clip_epochs, args.teacher_epochs, args.student_epochs, args.concept_epochs) < 0 or args.concepts < 0 \
            or args.batch < 1:
        raise ValueError("epochs and --concepts must be >= 0 and --batch >= 1")
    torch.manual_seed(args.seed)
    train = TrainConfig(batch=args.batch, lr=args.lr, concept_epochs=args.concept_epochs,
                        token_weight=args.token_weight, hidden_weight=args.hidden_weight,
                        attention_weight=args.attention_weight, temperature=args.temperature, seed=args.seed)
    stages = CaptionStages(Path(args.out), args.data, args.images, args.clip, args.clip_weights, train,
                           progress=not args.quiet, device=args.device)
    stages.clip_stage(args.clip_epochs)
    teacher = None if args.no_distillation else stages.captioner_stage("teacher", args.teacher_epochs, args.concepts)
    student = stages.captioner_stage("student", args.student_epochs, args.concepts, teacher=teacher,
                                     modulator=not args.no_modulator)
    report = {name: stages.evaluate(model, "val") for name, model in (("teacher", teacher), ("student", student))
              if model}
    (stages.out / "report.json").write_text(json.dumps(report, indent=2))
    for name, row in report.items():
        scores = "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in row["scores"].items())
        print(f"{name:<8} {row['parameters'] / 1e6:6.2f} M parameters  {scores}")
    print(f"wrote {stages.out / 'report.json'}")
    return 0
