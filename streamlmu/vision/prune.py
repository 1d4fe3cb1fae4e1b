"""Structured channel pruning of a YOLOv8 detector by its BatchNorm scales |γ| (torch-pruning).

torch-pruning's dependency graph keeps every coupled layer consistent: the
C2f concatenations, the residual adds of the bottlenecks, SPPF and the inputs
of the Detect head. Two things are prepared first:

* C2f splits one convolution's output in two with ``chunk``, which the graph
  cannot follow; :func:`split_c2f` replaces each C2f by :class:`C2fSplit`, the
  same computation with the two halves as two convolutions (weights copied,
  outputs identical);
* the Detect head (its box and class branches and the DFL) is left whole: only
  its inputs shrink with the neck.

Modes: ``"global"`` ranks every prunable channel of the network against one
threshold (layers whose γ fell under sparsity training lose most), and
``"uniform"`` removes the same fraction of every layer (the paper's per-layer
ratio). The result is an ordinary, smaller ``DetectionModel`` that ultralytics
trains, validates, predicts with and exports.
"""
from __future__ import annotations

import torch
from torch import nn

from streamlmu.vision.yolo import require

PRUNE_MODES = ("global", "uniform")


class C2fSplit(nn.Module):
    """ultralytics' C2f with its first convolution as two (``cv0``, ``cv1``): ``(B, c1, H, W) -> (B, c2, H, W)``."""

    def __init__(self, c2f: nn.Module):
        super().__init__()
        conv = type(c2f.cv1)
        half = c2f.c
        self.cv0, self.cv1 = (self._half(c2f.cv1, conv, part, half) for part in (0, 1))
        self.cv2, self.m = c2f.cv2, c2f.m
        for name in ("f", "i", "type", "np"):  # ultralytics' bookkeeping of a layer's inputs and index
            if hasattr(c2f, name):
                setattr(self, name, getattr(c2f, name))

    @staticmethod
    def _half(whole: nn.Module, conv: type, part: int, half: int) -> nn.Module:
        """The ``part``-th half of the output channels of ultralytics' ``Conv`` (conv, BN, activation)."""
        c1 = whole.conv.in_channels
        piece = conv(c1, half, whole.conv.kernel_size, whole.conv.stride)
        piece.act = whole.act
        piece.train(whole.training)
        rows = slice(part * half, (part + 1) * half)
        with torch.no_grad():
            piece.conv.weight.copy_(whole.conv.weight[rows])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(piece.bn, name).copy_(getattr(whole.bn, name)[rows])
            piece.bn.eps, piece.bn.momentum = whole.bn.eps, whole.bn.momentum
        return piece

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def split_c2f(model: nn.Module) -> nn.Module:
    """Replace every C2f of ``model`` by :class:`C2fSplit`, in place; returns ``model``."""
    from ultralytics.nn.modules.block import C2f
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is C2f:
                setattr(parent, name, C2fSplit(child))
    return model


def detect_head(model: nn.Module) -> nn.Module:
    from ultralytics.nn.modules.head import Detect
    heads = [m for m in model.modules() if isinstance(m, Detect)]
    if not heads:
        raise ValueError("the model has no Detect head: expected an ultralytics YOLO detection model")
    return heads[-1]


def prunable_batchnorms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose channels pruning may remove: all but the Detect head's."""
    head = set(detect_head(model).modules())
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m not in head]


def prune_detector(model: nn.Module, ratio: float, mode: str = "global", imgsz: int = 320,
                   round_to: int | None = 8) -> nn.Module:
    """Remove ``ratio`` of the prunable channels of a YOLOv8 ``DetectionModel`` by |γ|, in place (float32, CPU).

    ``mode``: ``"global"`` (one threshold over the network) or ``"uniform"`` (the same fraction per layer);
    ``round_to``: keep channel counts multiples of this (None: any count).
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the pruning ratio must be in (0, 1) (got {ratio})")
    if mode not in PRUNE_MODES:
        raise ValueError(f"mode must be one of {', '.join(PRUNE_MODES)} (got {mode!r})")
    tp = require("torch_pruning")
    head = detect_head(model)
    model = split_c2f(model.float().cpu().eval())
    for p in model.parameters():
        p.requires_grad_(True)
    example = torch.zeros(1, 3, imgsz, imgsz)
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.BNScaleImportance(),
                                  global_pruning=mode == "global", pruning_ratio=ratio, ignored_layers=[head],
                                  round_to=round_to)
    pruner.step()
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
