"""Training-time augmentation of feature batches: SpecAugment masks, frequency warping and mixup.

All draw from an explicit ``torch.Generator``, so a resumed training run
repeats the same augmentations.

Shapes: features ``(batch, time, mel)``; targets ``(batch, classes)`` (one-hot or soft).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchaudio.compliance.kaldi import mel_scale

from streamlmu.audio.features import FbankConfig, mel_centres_hz


def _mask(x: Tensor, dim: int, count: int, width: int, generator: torch.Generator) -> Tensor:
    """Zero ``count`` bands of up to ``width`` consecutive indices along ``dim`` (1: time, 2: mel), per example."""
    batch, size = x.shape[0], x.shape[dim]
    if count == 0 or width == 0 or size == 0:
        return x
    widths = torch.randint(0, min(width, size) + 1, (batch, count), generator=generator)
    starts = (torch.rand(batch, count, generator=generator) * (size - widths + 1)).long()
    index = torch.arange(size)
    band = (index >= starts[..., None]) & (index < (starts + widths)[..., None])  # (batch, count, size)
    keep = ~band.any(dim=1)                                                       # (batch, size)
    shape = [batch, 1, 1]
    shape[dim] = size
    return x * keep.view(shape).to(x.dtype)


def spec_augment(x: Tensor, generator: torch.Generator, freq_masks: int = 2, freq_width: int = 24,
                 time_masks: int = 2, time_width: int = 24) -> Tensor:
    """SpecAugment (Park et al., 2019) without time warping: zeroed mel bands and time spans."""
    if x.dim() != 3:
        raise ValueError(f"features must have shape (batch, time, mel) (got {tuple(x.shape)})")
    x = _mask(x, 2, freq_masks, freq_width, generator)
    return _mask(x, 1, time_masks, time_width, generator)


def freq_warp(x: Tensor, generator: torch.Generator, features: FbankConfig, max_warp: float = 0.1) -> Tensor:
    """Vocal tract length perturbation (Jaitly and Hinton, 2013) on log-mel frames.

    Each example gets a factor ``a ~ U(1 - max_warp, 1 + max_warp)``; the mel bin
    centred at ``f`` Hz takes the (linearly interpolated) value at ``f / a``, as
    if a speaker's formants sat ``a`` times higher. Bins whose source lies
    outside the filterbank's band take the edge bin. ``max_warp = 0`` leaves
    ``x`` unchanged and draws nothing.
    """
    if x.dim() != 3 or x.shape[2] != features.num_mel_bins:
        raise ValueError(f"features must have shape (batch, time, mel={features.num_mel_bins}) "
                         f"(got {tuple(x.shape)})")
    if not 0.0 <= max_warp < 1.0:
        raise ValueError(f"max_warp must be in [0, 1) (got {max_warp})")
    if max_warp == 0.0 or x.shape[0] == 0:
        return x
    bins = features.num_mel_bins
    centres = mel_centres_hz(features).double()
    mels = mel_scale(centres)
    first, step = mels[0], mels[1] - mels[0]  # the centres are equally spaced in mel
    factors = 1.0 + max_warp * (2.0 * torch.rand(x.shape[0], 1, generator=generator, dtype=torch.float64) - 1.0)
    source = ((mel_scale(centres / factors) - first) / step).clamp(0.0, bins - 1.0)  # fractional bins (batch, mel)
    lower = source.floor().long()
    upper = (lower + 1).clamp(max=bins - 1)
    weight = (source - lower).to(x.dtype)[:, None, :]
    index = (lower[:, None, :].expand(-1, x.shape[1], -1), upper[:, None, :].expand(-1, x.shape[1], -1))
    return x.gather(2, index[0]) * (1 - weight) + x.gather(2, index[1]) * weight


def mixup(x: Tensor, targets: Tensor, alpha: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mixup (Zhang et al., 2018): each example blended with a shuffled partner, ``lam ~ Beta(alpha, alpha)``.

    Returns the mixed features and the same blend of the targets. ``alpha = 0`` leaves both unchanged.
    """
    if alpha <= 0:
        return x, targets
    if targets.dim() != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(f"targets must have shape (batch={x.shape[0]}, classes) (got {tuple(targets.shape)})")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    partner = torch.randperm(x.shape[0], generator=generator)
    return lam * x + (1 - lam) * x[partner], lam * targets + (1 - lam) * targets[partner]
