"""SparCL's sparse training (arXiv 2209.09476; official code neu-spiral/SparCL): moving weight masks and
gradient masks, on one layer's tensors.

* **Task-aware dynamic masking (TDM)**: a layer starts with its largest |w| kept (:func:`magnitude_mask`);
  every few epochs :func:`prune_and_regrow` keeps the most important weights, importance
  ``|w| + λ·|∂L/∂w|`` (λ 0.5, the gradient of the last batch), pruning ``extra`` beyond the target sparsity,
  then lets ``extra`` of the zero weights (chosen at random) grow again from 0, so the layer ends each update
  at its target sparsity. With ``extra`` 0 (the last updates of a task) it only prunes.
* **Dynamic gradient masking (DGM)**: every k-th batch :func:`gradient_mask` keeps, of a layer's gradient,
  the entries of kept weights whose magnitude reaches the layer's ``percentile`` (taken over every entry,
  the masked zeros included, so it thins the gradient only beyond the weight sparsity); the batches between
  reuse that mask.

Masks are bool tensors shaped as the weight they mask (True: kept).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _top(score: Tensor, keep: int) -> Tensor:
    """True at the ``keep`` largest entries of ``score`` (bool, shaped as ``score``)."""
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if keep > 0:
        mask[score.flatten().topk(keep, sorted=False).indices] = True
    return mask.view_as(score)


def _count(sparsity: float, numel: int) -> int:
    """How many of ``numel`` entries a layer at ``sparsity`` keeps."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (got {sparsity})")
    return numel - int(round(sparsity * numel))


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """The mask that keeps the ``1 - sparsity`` largest |w| of ``weight``."""
    return _top(weight.detach().abs(), _count(sparsity, weight.numel()))


def prune_and_regrow(weight: Tensor, grad: Tensor | None, sparsity: float, extra: float = 0.01, lam: float = 0.5,
                     generator: torch.Generator | None = None) -> Tensor:
    """TDM's update of one layer: keep the ``1 - sparsity - extra`` most important weights
    (``|w| + lam·|grad|``; ``grad`` None: |w| alone), then as many more as ``extra`` of the layer chosen at
    random among the rest (their weights are to restart from 0). Returns the new mask (``sparsity`` exactly)."""
    keep = _count(sparsity, weight.numel())
    regrow = keep - _count(min(sparsity + extra, 1.0 - 1.0 / weight.numel()), weight.numel())
    score = weight.detach().abs()
    if grad is not None:
        score = score + lam * grad.detach().abs()
    mask = _top(score, keep - regrow)
    if regrow > 0:
        zeros = (~mask).flatten().nonzero().squeeze(1)
        pick = torch.randperm(len(zeros), generator=generator, device="cpu")[:regrow].to(zeros.device)
        mask.view(-1)[zeros[pick]] = True
    return mask


def gradient_mask(grad: Tensor, weight_mask: Tensor, percentile: float = 0.8) -> Tensor:
    """DGM's mask of one layer's gradient: kept weights whose |grad| is at least the ``percentile`` (in
    [0, 1]) of |grad| over all of the layer's entries, the masked ones counted as 0."""
    if not 0.0 <= percentile < 1.0:
        raise ValueError(f"percentile must be in [0, 1) (got {percentile})")
    magnitude = grad.detach().abs() * weight_mask
    threshold = torch.quantile(magnitude.flatten().float(), percentile)
    return weight_mask & (magnitude >= threshold) & (magnitude > 0)


def sparsity(masks: dict[str, Tensor] | list[Tensor]) -> float:
    """The fraction of masked (False) entries over all ``masks``."""
    tensors = list(masks.values()) if isinstance(masks, dict) else list(masks)
    total = sum(m.numel() for m in tensors)
    return 1.0 - sum(int(m.sum()) for m in tensors) / total if total else 0.0
