"""YOLOv8 compression in three stages (arXiv 2509.12918): sparsity training, channel pruning, CWD fine-tuning.

    RUN/sparse/          stage 1: training with an L1 rate on the BatchNorm scales γ (SGD)
    RUN/pruned.pt        stage 2: the sparse model with ``prune`` of its channels removed by |γ| (whole, float32)
    RUN/finetune/        stage 3: the pruned model fine-tuned with channel-wise distillation from the sparse one
    RUN/compressed.pt    the result (whole, float32), for :class:`streamlmu.vision.detect.Detector`
    RUN/gamma.png        |γ| of the prunable layers before and after sparsity training
    RUN/report.json|md   parameters, GFLOPs, mAP50 and mAP50-95 after each stage

Each stage records itself as done (``RUN/<stage>.json``); a rerun with the same ``RUN`` skips finished stages
and resumes an interrupted training from its last epoch.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from streamlmu.plots import pyplot, save_figure
from streamlmu.vision.detect import load_detector, save_detector
from streamlmu.vision.prune import PRUNE_MODES, parameter_count, prunable_batchnorms, prune_detector
from streamlmu.vision.yolo import ultralytics

FINETUNES = ("cwd", "plain", "feature")  # CWD, no distillation, ultralytics' own feature distillation


@dataclass
class CompressConfig:
    """The three stages' settings. ``model``: a YOLOv8 yaml (trained from scratch) or a ``.pt``."""

    data: str
    model: str = "yolov8n.yaml"
    prune: float = 0.5
    prune_mode: str = "global"
    imgsz: int = 320
    batch: int = 16
    sparse_epochs: int = 30
    finetune_epochs: int = 10
    sparsity_rate: float = 0.01
    finetune: str = "cwd"
    cwd_weight: float = 4.0
    cwd_tau: float = 1.0
    lr0: float = 0.01
    workers: int = 0
    device: str = "cpu"
    seed: int = 0
    fraction: float = 1.0        # of the training images each epoch uses
    progress: bool = True
    extra: dict = field(default_factory=dict)  # more ultralytics training arguments

    def check(self) -> None:
        check_dataset(self.data)
        if not (self.model.endswith((".yaml", ".yml")) or Path(self.model).is_file()):
            raise FileNotFoundError(f"--model must be a YOLOv8 yaml (e.g. yolov8n.yaml) or an existing .pt "
                                    f"(got {self.model})")
        if self.prune_mode not in PRUNE_MODES or self.finetune not in FINETUNES:
            raise ValueError(f"prune_mode must be one of {PRUNE_MODES} and finetune one of {FINETUNES}")
        if not 0 < self.prune < 1 or self.sparse_epochs < 0 or self.finetune_epochs < 0 or self.sparsity_rate < 0:
            raise ValueError("prune must be in (0, 1), epochs and the sparsity rate >= 0")


def check_dataset(data: str | Path) -> dict:
    """The YOLO dataset description at ``data``, once its train and val image folders are known to exist."""
    import yaml
    path = Path(data)
    if not path.is_file():
        raise FileNotFoundError(f"--data must be a YOLO dataset yaml; {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML ({err})") from err
    if not isinstance(spec, dict) or not {"train", "val", "names"} <= spec.keys():
        raise ValueError(f"{path} must give train, val and names (and path), as streamlmu synth-detection writes")
    root = Path(spec.get("path") or path.parent)
    root = root if root.is_absolute() else path.parent / root
    for split in ("train", "val"):
        for entry in spec[split] if isinstance(spec[split], list) else [spec[split]]:
            if not (root / entry).exists():
                raise FileNotFoundError(f"{path}: its {split} images {root / entry} do not exist")
    return spec


def _train_args(cfg: CompressConfig, run: Path, stage: str, model: str, epochs: int) -> dict:
    args = dict(data=cfg.data, model=model, epochs=epochs, imgsz=cfg.imgsz, batch=cfg.batch, workers=cfg.workers,
                device=cfg.device, project=str(run.resolve()), name=stage, exist_ok=True, optimizer="SGD",
                lr0=cfg.lr0, seed=cfg.seed, deterministic=True, amp=cfg.device != "cpu", plots=False,
                verbose=cfg.progress, fraction=cfg.fraction, val=True)
    return {**args, **cfg.extra}


def train_stage(cfg: CompressConfig, run: Path, stage: str, model: str, epochs: int, extra: dict | None = None,
                **trainer_options) -> Path:
    """Train ``model`` for ``epochs`` as stage ``stage`` under ``run`` (resuming an interrupted run), with more
    ultralytics arguments ``extra``; its best weights."""
    ultralytics()
    from streamlmu.vision.trainer import DetectorTrainer
    weights = run / stage / "weights"
    args = {**_train_args(cfg, run, stage, model, epochs), **(extra or {})}
    if (weights / "last.pt").is_file() and not (run / f"{stage}.json").is_file():
        args["resume"] = str(weights / "last.pt")
    trainer = DetectorTrainer(args, **trainer_options)
    trainer.train()
    return weights / "best.pt" if (weights / "best.pt").is_file() else weights / "last.pt"


def flops(model: nn.Module, imgsz: int) -> float:
    """GFLOPs of one ``imgsz`` x ``imgsz`` frame as ultralytics counts them (2 x multiply-accumulates)."""
    ultralytics()
    from ultralytics.utils.torch_utils import get_flops
    return float(get_flops(model, imgsz))


def trained(cfg: CompressConfig, run: Path, stage: str, model: str, epochs: int, save_as: Path, **options) -> dict:
    """:func:`train_stage`, its best model saved whole in float32 at ``save_as``, and that model's figures."""
    best = train_stage(cfg, run, stage, model, epochs, **options)
    path = save_detector(load_detector(best), save_as, stage=stage)
    return {"weights": str(path), "epochs": epochs, **validate(path, cfg)}


def finetune_options(kind: str, teacher: str, cfg: CompressConfig) -> dict:
    """:func:`train_stage` options of a fine-tuning (one of :data:`FINETUNES`) from the model saved at ``teacher``."""
    if kind == "cwd":
        return dict(teacher=load_detector(teacher), cwd_weight=cfg.cwd_weight, cwd_tau=cfg.cwd_tau)
    if kind == "feature":
        return dict(extra={"distill_model": teacher})
    return {}


def validate(path: str | Path, cfg: CompressConfig) -> dict:
    """mAP50 and mAP50-95 of a saved model on the validation split, with its size."""
    ultralytics()
    from ultralytics import YOLO
    yolo = YOLO(str(path))
    metrics = yolo.val(data=cfg.data, imgsz=cfg.imgsz, batch=cfg.batch, device=cfg.device, plots=False,
                       verbose=False, workers=cfg.workers)
    model = load_detector(path)
    return {"params": parameter_count(model), "gflops": round(flops(model, cfg.imgsz), 3),
            "map50": round(float(metrics.box.map50), 4), "map50_95": round(float(metrics.box.map), 4)}


def gammas(model: nn.Module) -> np.ndarray:
    """|γ| of every prunable BatchNorm channel."""
    return torch.cat([bn.weight.detach().abs().flatten() for bn in prunable_batchnorms(model)]).cpu().numpy()


def plot_gammas(curves: dict[str, np.ndarray], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    top = max(float(v.max()) for v in curves.values())
    for name, values in curves.items():
        ax.hist(values, bins=60, range=(0, top), alpha=0.6, label=f"{name} (median {np.median(values):.3f})")
    ax.set_xlabel("|γ| of prunable BatchNorm channels")
    ax.set_ylabel("channels")
    ax.legend()
    return save_figure(fig, path)


def run_stage(run: Path, name: str, work: Callable[[], dict]) -> dict:
    """Run a stage once: its record (with the seconds it took), read back if it is done."""
    record = run / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    start = time.time()
    result = {**work(), "seconds": round(time.time() - start, 1)}
    record.write_text(json.dumps(result, indent=1))
    return result


def compress(cfg: CompressConfig, run: str | Path) -> dict:
    """The three stages into ``run``; returns the report (also written as ``report.json`` and ``report.md``)."""
    cfg.check()
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    report: dict = {"config": asdict(cfg)}

    def sparse() -> dict:
        best = train_stage(cfg, run, "sparse", cfg.model, cfg.sparse_epochs, sparsity=cfg.sparsity_rate)
        return {"weights": str(best), **validate(best, cfg)}

    report["sparse"] = run_stage(run, "sparse", sparse)

    def prune() -> dict:
        before = None if cfg.model.endswith((".yaml", ".yml")) else gammas(load_detector(cfg.model))
        curves = {"after sparsity training": gammas(load_detector(report["sparse"]["weights"]))}
        if before is not None:
            curves = {"before": before, **curves}
        plot_gammas(curves, run / "gamma.png")
        pruned = prune_detector(load_detector(report["sparse"]["weights"]), cfg.prune, cfg.prune_mode, cfg.imgsz)
        path = save_detector(pruned, run / "pruned.pt", stage="pruned", prune=cfg.prune, mode=cfg.prune_mode)
        return {"weights": str(path), **validate(path, cfg)}

    report["pruned"] = run_stage(run, "pruned", prune)

    report["finetune"] = run_stage(run, "finetune", lambda: trained(
        cfg, run, "finetune", report["pruned"]["weights"], cfg.finetune_epochs, run / "compressed.pt",
        **finetune_options(cfg.finetune, report["sparse"]["weights"], cfg)))
    (run / "report.json").write_text(json.dumps(report, indent=1))
    (run / "report.md").write_text(report_table(report))
    return report


def report_table(report: dict) -> str:
    """The report as a Markdown table."""
    rows = ["| stage | parameters | GFLOPs | mAP50 | mAP50-95 |", "| --- | --- | --- | --- | --- |"]
    for stage in ("sparse", "pruned", "finetune"):
        r = report.get(stage)
        if r:
            rows.append(f"| {stage} | {r['params'] / 1e6:.2f} M | {r['gflops']:.2f} | {r['map50']:.3f} | "
                        f"{r['map50_95']:.3f} |")
    return "\n".join(rows) + "\n"
