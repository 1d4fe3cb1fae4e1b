"""Training items as front-end frames, each computed once per rendering of the data.

The speech-embedding front end costs about 6 ms per 1 s clip on one core
(twice that one clip at a time), more than the small models trained on it;
recomputing it every epoch would make it the whole cost of training.
:class:`CachedFrames` wraps a dataset of ``(waveform, label)`` items (whose
``set_epoch`` draws new noise, new stream windows...) and keeps each item's
frames: epoch ``e`` reads rendering ``e % variants`` of the data, so a run
sees ``variants`` renderings of every item, each computed once. A miss
computes the frames of the ``batch_size`` neighbouring items too, in one call
per signal length (items depend only on their rendering and index).

Shapes: items ``(frames (time, feature_size), label)``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections import defaultdict

import torch
from torch import Tensor
from torch.utils.data import Dataset

from streamlmu.audio.frontend import FrontEndConfig, clip_features, signal_features


class CachedFrames(Dataset):
    """``dataset``'s items as frames of ``features``: clips padded to ``clip_frames`` (``clips=True``), else the
    frames of the whole item (stream windows). Unreadable items (``None``) stay ``None``."""

    def __init__(self, dataset: Dataset, features: FrontEndConfig, variants: int = 1, clips: bool = True,
                 batch_size: int = 64):
        if variants < 1:
            raise ValueError(f"variants must be >= 1 (got {variants})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
        self.dataset, self.features, self.variants, self.clips = dataset, features, variants, clips
        self.batch_size = batch_size
        self.variant = 0
        self._cache: dict[tuple[int, int], tuple[Tensor, int] | None] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.variant = epoch % self.variants
        self.dataset.set_epoch(self.variant)

    def __getitem__(self, index: int) -> tuple[Tensor, int] | None:
        key = (self.variant, index)
        if key not in self._cache:
            start = index - index % self.batch_size
            self._render(range(start, min(start + self.batch_size, len(self))))
        return self._cache[key]

    def _render(self, indices: range) -> None:
        """Frames of the current rendering's ``indices`` not cached yet, one front-end call per signal length."""
        by_length: dict[int, list[tuple[int, Tensor, int]]] = defaultdict(list)
        for index in indices:
            if (self.variant, index) in self._cache:
                continue
            item = self.dataset[index]
            if item is None:
                self._cache[self.variant, index] = None
            else:
                by_length[item[0].shape[-1]].append((index, *item))
        to_frames = clip_features if self.clips else signal_features
        for group in by_length.values():
            frames = to_frames(torch.stack([wave for _, wave, _ in group]), self.features, torch.get_num_threads())
            for (index, _, label), item_frames in zip(group, frames):
                self._cache[self.variant, index] = (item_frames.clone(), label)
        _release_freed_memory()


def _release_freed_memory() -> None:
    """Hand the heap memory freed since the last call back to the system (glibc only; elsewhere nothing).

    Rendering allocates and frees many waveforms of a few hundred kB; glibc keeps the freed pages, and a run
    that renders 4 x 28,000 two-second stream windows grew by about 5 GB per rendering without this."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None
if _LIBC is not None and not hasattr(_LIBC, "malloc_trim"):  # musl and other C libraries
    _LIBC = None
