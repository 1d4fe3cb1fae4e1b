"""Continual learning on a class-incremental split: fine-tuning, DER++, SparCL-DER++ or joint training.

Trains the method task after task and prints the class-IL and task-IL accuracy, backward transfer,
training FLOPs and wall time; writes OUT/report.json and OUT/accuracy.png (accuracy on each task after
each task). See streamlmu.vision.continual and docs/vision.md.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits",
                        help="digits (Split-Digits), shapes (Split-Shapes), cifar10:DIR or cifar100:DIR (the "
                             "official python archives in DIR)")
    parser.add_argument("--method", choices=("finetune", "derpp", "derpp-masked", "sparcl", "joint"), default="sparcl",
                        help="derpp-masked: the current batch's other-task classes masked, as SparCL's code does")
    parser.add_argument("--sparsity", type=float, default=0.75, help="weight sparsity of sparcl's masked layers")
    parser.add_argument("--network", choices=("small", "resnet18"), default="small")
    parser.add_argument("--width", type=int, default=32, help="channels of the network's first layer")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per task")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--buffer", type=int, default=500, help="rehearsal buffer size")
    parser.add_argument("--removal", type=float, default=0.3, help="fraction of each task's images sparcl removes")
    parser.add_argument("--separate-forward", action="store_true",
                        help="pass the batch and its replays through the network one by one, as mammoth and "
                             "SparCL's code do (default: as one batch, as avalanche-lib's DER)")
    parser.add_argument("--buffer-policy", choices=("reservoir", "balanced"), default="reservoir",
                        help="reservoir: DER++'s sample of every presentation, logits as they were; balanced: "
                             "class-balanced, filled at the end of each task, as avalanche-lib's DER")
    parser.add_argument("--shared-replay", action="store_true",
                        help="one replayed batch for both replay terms, as avalanche-lib's DER (default: two, "
                             "as DER++ and SparCL's code)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/continual", help="folder for report.json and accuracy.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from streamlmu.vision.continual import ContinualConfig
    from streamlmu.vision.methods import load_split, run_method
    from streamlmu.vision.task_sequence import Schedule, plot_accuracy
    split = load_split(args.data)
    schedule = Schedule.scaled(args.epochs, args.batch, args.removal, args.seed)
    config = ContinualConfig(lr=args.lr, buffer=args.buffer, sparsity=args.sparsity,
                             joint_forward=not args.separate_forward, buffer_policy=args.buffer_policy,
                             shared_replay=args.shared_replay, seed=args.seed)
    row = run_method(args.method, split, schedule, config, args.network, args.width, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"data": args.data, **row}, indent=1))
    plot_accuracy({args.method: row["class_il_matrix"]}, out / "accuracy.png")
    print(f"{split.name}, {args.method}: class-IL {row['class_il']:.3f}, task-IL {row['task_il']:.3f}, "
          f"backward transfer {row['bwt']:+.3f}, {row['flops'] / 1e12:.3f} TFLOPs of training, "
          f"{row['seconds']:.0f} s; wrote {out}")
    return 0
