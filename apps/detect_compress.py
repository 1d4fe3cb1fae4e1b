"""Compress a YOLOv8 detector: sparsity training, channel pruning by |gamma|, channel-wise distillation.

Writes OUT/compressed.pt (the pruned, fine-tuned model), OUT/report.md|json (parameters, GFLOPs, mAP after
each stage) and OUT/gamma.png; rerun with the same --out to resume. See streamlmu.vision.compress.
"""
from __future__ import annotations

import argparse

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="YOLO dataset yaml (streamlmu synth-detection writes one)")
    parser.add_argument("--model", default="yolov8n.yaml", help="YOLOv8 yaml (trained from scratch) or a .pt")
    parser.add_argument("--prune", type=float, default=0.5, help="fraction of prunable channels to remove")
    parser.add_argument("--prune-mode", choices=("global", "uniform"), default="global",
                        help="one |gamma| threshold over the network, or the same fraction per layer")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sparse-epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--sparsity-rate", type=float, default=0.01,
                        help="r0 of the L1 rate on BatchNorm gammas, per image (decays to 0.1 r0)")
    parser.add_argument("--finetune", choices=("cwd", "plain", "feature"), default="cwd",
                        help="fine-tuning of the pruned model: channel-wise distillation, none, or ultralytics' "
                             "feature distillation")
    parser.add_argument("--cwd-weight", type=float, default=4.0,
                        help="w of the CWD loss (4: chosen on the generated set's validation split; docs/vision.md)")
    parser.add_argument("--cwd-tau", type=float, default=1.0, help="temperature of the CWD softmax")
    parser.add_argument("--lr0", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--nbs", type=int, default=64,
                        help="images per optimizer step (ultralytics' nominal batch size); with a few hundred "
                             "training images use the batch size (bench/detect.py uses 16)")
    parser.add_argument("--device", default="cpu", help="cpu, or a CUDA device such as 0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="less output")


def run(args: argparse.Namespace) -> int:
    from streamlmu.vision.compress import CompressConfig, compress, report_table
    cfg = CompressConfig(data=args.data, model=args.model, prune=args.prune, prune_mode=args.prune_mode,
                         imgsz=args.imgsz, batch=args.batch, sparse_epochs=args.sparse_epochs,
                         finetune_epochs=args.finetune_epochs, sparsity_rate=args.sparsity_rate,
                         finetune=args.finetune, cwd_weight=args.cwd_weight, cwd_tau=args.cwd_tau, lr0=args.lr0,
                         device=args.device, seed=args.seed, progress=not args.quiet, extra={"nbs": args.nbs})
    report = compress(cfg, args.out)
    print(report_table(report), end="")
    print(f"compressed model: {report['finetune']['weights']}")
    return 0
