"""Training items as front-end frames, each computed once per rendering of the data.

The speech-embedding front end costs about 6 ms per 1 s clip on one core,
more than the small models trained on it; recomputing it every epoch would
make it the whole cost of training. :class:`CachedFrames` wraps a dataset of
``(waveform, label)`` items (whose ``set_epoch`` draws new noise, new stream
windows...) and keeps each item's frames: epoch ``e`` reads rendering
``e % variants`` of the data, so a run sees ``variants`` renderings of every
item, each computed once.

Shapes: items ``(frames (time, feature_size), label)``.
"""
from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from streamlmu.audio.frontend import FrontEndConfig, clip_features, signal_features


class CachedFrames(Dataset):
    """``dataset``'s items as frames of ``features``: clips padded to ``clip_frames`` (``clips=True``), else the
    frames of the whole item (stream windows). Unreadable items (``None``) stay ``None``."""

    def __init__(self, dataset: Dataset, features: FrontEndConfig, variants: int = 1, clips: bool = True):
        if variants < 1:
            raise ValueError(f"variants must be >= 1 (got {variants})")
        self.dataset, self.features, self.variants, self.clips = dataset, features, variants, clips
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
            item = self.dataset[index]
            if item is not None:
                wave, label = item
                frames = (clip_features if self.clips else signal_features)(wave[None], self.features)[0]
                item = (frames.contiguous(), label)
            self._cache[key] = item
        return self._cache[key]

