"""Caption sets in the Karpathy split format of COCO (``dataset_coco.json``), and their concepts.

    captions = CaptionSet.load("data/scenes/captions.json")            # or dataset_coco.json, images=COCO_DIR
    images, references = captions.split("test")                        # uint8 (N, 3, S, S), [[str, ...], ...]
    present = captions.concept_targets("train")                        # (N, concepts) 0/1

The JSON holds ``images``, each with ``filepath`` and ``filename`` (the image at ``images/filepath/filename``),
``split`` (``train``, ``val``, ``test``; Karpathy's ``restval`` counts as ``train``) and ``sentences`` (each with
``raw``). Concepts: the file's ``concepts`` list and each image's ``concepts`` where given (the generated set);
otherwise the ``size`` most frequent caption words that are not function words, and an image's concepts are
those its references say.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from streamlmu.vision.caption.vocab import words_of

FUNCTION_WORDS = frozenset(
    "a an the of on in at to and with is are there it its this that some two one three near next by for from up "
    "down while his her their other another into out over under".split())


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    split: str
    references: tuple[str, ...]
    concepts: tuple[str, ...] | None


class CaptionSet:
    """The images of a Karpathy-format caption file, their references and concepts."""

    def __init__(self, items: list[CaptionedImage], concepts: list[str]):
        self.items, self.concepts = items, list(concepts)
        self.concept_index = {c: i for i, c in enumerate(self.concepts)}

    @classmethod
    def load(cls, path: str | Path, images: str | Path | None = None, concepts: int = 1000) -> "CaptionSet":
        """Read ``path``; images under ``images`` (default: the JSON's folder)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no caption file at {path} (the Karpathy split JSON, e.g. dataset_coco.json)")
        try:
            data = json.loads(path.read_text())
            entries = data["images"]
            items = [CaptionedImage(Path(images or path.parent) / e.get("filepath", "") / e["filename"],
                                    "train" if e["split"] == "restval" else e["split"],
                                    tuple(s["raw"] for s in e["sentences"]),
                                    tuple(e["concepts"]) if "concepts" in e else None) for e in entries]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a caption file in the Karpathy split format (images with filepath, "
                             f"filename, split and sentences): {err!r}") from err
        vocabulary = data.get("concepts") or frequent_words([r for i in items for r in i.references], concepts)
        return cls(items, vocabulary)

    def of(self, split: str) -> list[CaptionedImage]:
        chosen = [i for i in self.items if i.split == split]
        if not chosen:
            raise ValueError(f"the caption set has no {split!r} images (it has "
                             f"{', '.join(sorted({i.split for i in self.items})) or 'none'})")
        return chosen

    def split(self, split: str, size: int | None = None) -> tuple[Tensor, list[list[str]]]:
        """Images ``(N, 3, S, S)`` uint8 (resized to ``size`` if given) and their references."""
        chosen = self.of(split)
        return torch.stack([read_image(i.path, size) for i in chosen]), self.split_references(split)

    def split_references(self, split: str) -> list[list[str]]:
        return [list(i.references) for i in self.of(split)]

    def concept_targets(self, split: str) -> Tensor:
        """``(N, concepts)`` float: 1 where an image has the concept."""
        chosen = self.of(split)
        present = torch.zeros(len(chosen), len(self.concepts))
        for row, item in enumerate(chosen):
            words = item.concepts if item.concepts is not None else {w for r in item.references for w in words_of(r)}
            for word in words:
                if word in self.concept_index:
                    present[row, self.concept_index[word]] = 1.0
        return present


def frequent_words(captions: list[str], size: int) -> list[str]:
    """The ``size`` most frequent words of ``captions`` that are not function words (ties alphabetically)."""
    counts = Counter(w for c in captions for w in words_of(c) if w not in FUNCTION_WORDS)
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def read_image(path: Path, size: int | None = None) -> Tensor:
    """An image file as ``(3, H, W)`` uint8 RGB (greyscale and RGBA converted), square-resized to ``size``."""
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    image = Image.open(path).convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).transpose(2, 0, 1).copy())
