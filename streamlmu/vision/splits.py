"""Class-incremental image streams: a labelled image set cut into tasks of a few classes each.

    Split.train, Split.test : (images (N, C, H, W) float32 in [0, 1], labels (N,) int64)

* :func:`split_digits`: scikit-learn's 1,797 handwritten 8×8 digits (real images that ship inside the
  package), upscaled, five tasks of two classes (Split-Digits);
* :func:`split_cifar`: CIFAR-10 (five tasks of two classes) or CIFAR-100 (ten of ten) read from a local
  folder in the layout of the official python archives (``cifar-10-batches-py``: ``data_batch_1`` ..
  ``data_batch_5`` and ``test_batch``; ``cifar-100-python``: ``train`` and ``test``), for users who have them.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F


@dataclass(frozen=True)
class Split:
    """A labelled image set and its tasks: ``tasks[t]`` are the classes task ``t`` introduces."""

    name: str
    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    tasks: tuple[tuple[int, ...], ...]

    @property
    def classes(self) -> int:
        return sum(len(t) for t in self.tasks)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def task(self, t: int, part: str = "train") -> tuple[Tensor, Tensor]:
        """The images and labels of task ``t`` in ``part`` ("train" or "test")."""
        images, labels = self.train if part == "train" else self.test
        keep = torch.isin(labels, torch.tensor(self.tasks[t]))
        return images[keep], labels[keep]


def consecutive_tasks(classes: int, per_task: int) -> tuple[tuple[int, ...], ...]:
    """Classes 0..classes-1 in tasks of ``per_task`` consecutive classes."""
    return tuple(tuple(range(start, start + per_task)) for start in range(0, classes, per_task))


def split_digits(size: int = 16, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Split-Digits: the digits scaled to ``size``×``size`` (bilinear), one channel, a stratified test split
    of ``test_fraction`` drawn with ``seed``."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(digits.target == c)
        test[rng.choice(members, int(round(test_fraction * len(members))), replace=False)] = True
    test_t = torch.from_numpy(test)
    return Split("split-digits", (images[~test_t], labels[~test_t]), (images[test_t], labels[test_t]),
                 consecutive_tasks(10, 2))


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: expected the official CIFAR python archive's files "
                                f"(data_batch_1..5 and test_batch, or train and test)")
    with path.open("rb") as f:
        return pickle.load(f, encoding="bytes")


def _images(batches: list[dict], key: bytes) -> tuple[Tensor, Tensor]:
    data = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])
    return torch.from_numpy(data.astype(np.float32) / 255.0), torch.from_numpy(labels)


def split_cifar(root: str | Path, classes: int = 10) -> Split:
    """Split CIFAR-10 (``classes`` 10) or CIFAR-100 (100) from ``root``: the folder the official archive
    unpacks to, or the folder holding it."""
    if classes not in (10, 100):
        raise ValueError(f"CIFAR has 10 or 100 classes (got {classes})")
    root = Path(root)
    folder = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    if (root / folder).is_dir():
        root = root / folder
    if classes == 10:
        train = _images([_unpickle(root / f"data_batch_{i}") for i in range(1, 6)], b"labels")
        test = _images([_unpickle(root / "test_batch")], b"labels")
        return Split("split-cifar10", train, test, consecutive_tasks(10, 2))
    train = _images([_unpickle(root / "train")], b"fine_labels")
    test = _images([_unpickle(root / "test")], b"fine_labels")
    return Split("split-cifar100", train, test, consecutive_tasks(100, 10))
