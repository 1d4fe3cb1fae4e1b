"""A generated captioning set: scenes of shapes with captions from a grammar, deterministic for a seed.

Each image holds one object group, or two with a spatial relation between them; a group is one, two or three
identical shapes (circle, square, triangle, star, cross, ring, hexagon) of a named colour, a size (small or
large) and sometimes a texture (striped, checkered, dotted), on grass, gravel or bricks (photographs that ship
with scikit-image) or a plain grey or dark background. Five reference captions per image come from templates
with paraphrases (word order, synonyms, how much detail), so no single wording is the answer.

Layout, the Karpathy split format of COCO (what :mod:`streamlmu.vision.caption.data` reads)::

    DIR/captions.json     {"dataset", "concepts": [...], "images": [{"filepath", "filename", "imgid", "split",
                            "sentences": [{"raw", "tokens"}], "concepts": [...]}]}
    DIR/images/NNNNN.png  RGB
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from streamlmu.vision.caption.vocab import words_of
from streamlmu.vision.shapes import SHAPES, TEXTURES, shape_sprite, texture
from streamlmu.vision.synth import background_pool, photo_background

COLOURS = {"red": (215, 40, 40), "green": (40, 165, 60), "blue": (45, 85, 220), "yellow": (240, 215, 40),
           "orange": (245, 135, 30), "purple": (140, 55, 175), "white": (240, 240, 240), "black": (25, 25, 25)}
NOUNS = {"disk": ("circle", "circles"), "square": ("square", "squares"), "triangle": ("triangle", "triangles"),
         "star": ("star", "stars"), "cross": ("cross", "crosses"), "ring": ("ring", "rings"),
         "hexagon": ("hexagon", "hexagons")}
PATTERNS = {"stripes": "striped", "checker": "checkered", "dots": "dotted"}
SIZES = {"small": (0.15, 0.22), "large": (0.3, 0.4)}           # side as a fraction of the image
PHOTOS = {"grass": "grass", "gravel": "gravel", "bricks": "brick"}  # word -> skimage.data name
PLAIN = {"grey": (128, 128, 128), "dark": (35, 35, 40)}
COUNTS = {1: ("a", "one"), 2: ("two", "a pair of"), 3: ("three",)}
RELATIONS = {"left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
             "above": ("above", "over"), "below": ("below", "under")}
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SceneSetConfig:
    train: int = 8000
    val: int = 500
    test: int = 500
    size: int = 96
    captions: int = 5
    seed: int = 0


@dataclass(frozen=True)
class Group:
    """``count`` identical shapes: ``shape`` (a key of :data:`NOUNS`), ``colour``, ``size``, ``pattern`` or None."""

    shape: str
    colour: str
    size: str
    pattern: str | None
    count: int


def concept_words() -> list[str]:
    """Every word a scene can be described by (the concept vocabulary of the set)."""
    return (list(COLOURS) + [n for n, _ in NOUNS.values()] + list(PATTERNS.values()) + list(SIZES) + ["two", "three"]
            + list(PHOTOS) + list(PLAIN) + ["left", "right", "top", "bottom", "centre", "above", "below"])


def _group(rng: np.random.Generator) -> Group:
    return Group(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))),
                 str(rng.choice(TEXTURES)) if rng.random() < 0.3 else None, int(rng.choice([1, 2, 3], p=[.7, .2, .1])))


def _sprite(group: Group, rng: np.random.Generator) -> Image.Image:
    shift = int(rng.integers(-20, 21))  # lighter or darker, hardly another hue
    colour = tuple(int(np.clip(c + shift + rng.integers(-6, 7), 0, 255)) for c in COLOURS[group.colour])
    if group.pattern is None:
        return shape_sprite(group.shape, colour)
    other = tuple(int(c * 0.45) for c in colour) if sum(colour) > 300 else tuple(min(255, c + 110) for c in colour)
    return shape_sprite(group.shape, colour, texture(group.pattern, colour, other, rng))


def _draw(image: Image.Image, group: Group, box: tuple[float, float, float, float], rng: np.random.Generator) -> None:
    """Draw ``group`` inside ``box`` (x0, y0, x1, y1 as fractions of the image), side by side if several."""
    size = image.size[0]
    x0, y0, x1, y1 = (v * size for v in box)
    side = int(rng.uniform(*SIZES[group.size]) * size)
    slot = (x1 - x0) / group.count
    side = max(6, int(min(side, slot * 0.95, (y1 - y0) * 0.95)))
    top = rng.uniform(y0, max(y0, y1 - side))
    for i in range(group.count):
        sprite = _sprite(group, rng)
        if group.shape not in ("disk", "ring"):
            sprite = sprite.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
        sprite = sprite.resize((side, side), Image.BILINEAR)
        left = x0 + i * slot + rng.uniform(0, max(0.0, slot - side))
        image.alpha_composite(sprite, (int(left), int(top + rng.uniform(-0.03, 0.03) * size)))


def _where(box: tuple[float, float, float, float]) -> str:
    """Where a group's box lies: ``"in the top left corner"``, ``"on the left"``, ``"in the centre"``, ..."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    row = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    if col and row:
        return f"in the {row} {col} corner"
    if col:
        return f"on the {col}"
    return f"at the {row}" if row else "in the centre"


def _phrase(group: Group, rng: np.random.Generator) -> str:
    """A noun phrase for ``group`` with a random amount of detail: ``"two small striped red stars"``."""
    count = str(rng.choice(COUNTS[group.count]))
    noun = NOUNS[group.shape][group.count > 1]
    words = [count]
    if rng.random() < 0.6:
        words.append(group.size)
    if group.pattern and rng.random() < 0.8:
        words.append(PATTERNS[group.pattern])
    words.append(group.colour)
    if count == "a" and words[1][0] in "aeiou":  # "an orange star"
        words[0] = "an"
    return " ".join(words + [noun])


def _there(phrase: str) -> str:
    return f"there {'is' if phrase.split()[0] in ('a', 'an', 'one') else 'are'} {phrase}"


def _on(background: str) -> str:
    return f"on {background}" if background in PHOTOS else f"on a {background} background"


def _captions(groups: list[Group], boxes: list, relation: str | None, background: str, n: int,
              rng: np.random.Generator) -> list[str]:
    if relation is None:
        (group,), (box,) = groups, boxes
        templates = [lambda a: f"{a} {_where(box)}", lambda a: f"{_there(a)} {_where(box)}",
                     lambda a: f"{a} {_on(background)}", lambda a: f"a picture of {a} {_on(background)}",
                     lambda a: f"{a} {_where(box)} {_on(background)}", lambda a: f"{_where(box)} {_there(a)}"]
        pick = rng.permutation(len(templates))[:n]
        return [templates[i](_phrase(group, rng)) for i in pick]
    rel, inverse = RELATIONS[relation], RELATIONS[OPPOSITE[relation]]
    templates = [lambda a, b: f"{a} {rng.choice(rel)} {b}", lambda a, b: f"{b} {rng.choice(inverse)} {a}",
                 lambda a, b: f"{_there(a)} {rng.choice(rel)} {b}", lambda a, b: f"{a} and {b} {_on(background)}",
                 lambda a, b: f"{a} {rng.choice(rel)} {b} {_on(background)}", lambda a, b: f"{b} and {a}"]
    pick = rng.permutation(len(templates))[:n]
    return [templates[i](_phrase(groups[0], rng), _phrase(groups[1], rng)) for i in pick]


def _concepts(groups: list[Group], boxes: list, relation: str | None, background: str) -> list[str]:
    words = {background}
    for group in groups:
        words |= {group.colour, NOUNS[group.shape][0], group.size}
        words |= {PATTERNS[group.pattern]} if group.pattern else set()
        words |= {"two"} if group.count == 2 else {"three"} if group.count == 3 else set()
    if relation is not None:
        words |= {"above", "below"} if relation in ("above", "below") else {"left", "right"}
    for box in boxes if relation is None else []:
        words |= set(words_of(_where(box))) & {"left", "right", "top", "bottom", "centre"}
    return sorted(words)


def make_scene(rng: np.random.Generator, pool: list[np.ndarray], cfg: SceneSetConfig
               ) -> tuple[np.ndarray, list[str], list[str]]:
    """One scene: ``(size, size, 3)`` uint8 RGB, its reference captions and its concepts."""
    background = str(rng.choice(list(PHOTOS) + list(PLAIN)))
    if background in PHOTOS:
        image = photo_background(rng, [pool[list(PHOTOS).index(background)]], cfg.size).convert("RGBA")
    else:
        shade = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in PLAIN[background])
        image = Image.new("RGBA", (cfg.size, cfg.size), shade + (255,))
    relation = None if rng.random() < 0.4 else str(rng.choice(list(RELATIONS)))
    if relation is None:
        groups = [_group(rng)]
        x, y = rng.uniform(0, 0.45), rng.uniform(0, 0.45)
        width = 0.55 if groups[0].count == 1 else 1.0 - x
        boxes = [(x, y, min(1.0, x + width), y + 0.55)]
    else:
        groups = [_group(rng), _group(rng)]
        while groups[1].shape == groups[0].shape and groups[1].colour == groups[0].colour:
            groups[1] = _group(rng)
        first, second = ((0.0, 0.15, 0.5, 0.85), (0.5, 0.15, 1.0, 0.85)) if relation in ("left", "right") else \
            ((0.1, 0.0, 0.9, 0.5), (0.1, 0.5, 0.9, 1.0))
        boxes = [first, second] if relation in ("left", "above") else [second, first]
    for group, box in zip(groups, boxes):
        _draw(image, group, box, rng)
    captions = _captions(groups, boxes, relation, background, cfg.captions, rng)
    return np.asarray(image.convert("RGB")), captions, _concepts(groups, boxes, relation, background)


def write_scene_set(out: str | Path, cfg: SceneSetConfig = SceneSetConfig(), progress: bool = True) -> Path:
    """Write the set into ``out`` (see the module docstring); returns the path of ``captions.json``."""
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    pool = background_pool(tuple(PHOTOS.values()))
    entries, total = [], cfg.train + cfg.val + cfg.test
    splits = ["train"] * cfg.train + ["val"] * cfg.val + ["test"] * cfg.test
    for i, split in enumerate(tqdm(splits, desc="scenes", disable=not progress, total=total)):
        image, captions, concepts = make_scene(rng, pool, cfg)
        name = f"{i:05d}.png"
        Image.fromarray(image).save(root / "images" / name)
        entries.append({"filepath": "images", "filename": name, "imgid": i, "split": split,
                        "sentences": [{"raw": c, "tokens": words_of(c)} for c in captions], "concepts": concepts})
    path = root / "captions.json"
    path.write_text(json.dumps({"dataset": "synth-captions", "concepts": concept_words(), "images": entries}))
    return path


def scene_video(scenes: int = 10, seconds: float = 3.0, rate: float = 25.0, size: int = 96, noise: float = 3.0,
                seed: int = 0) -> Iterator[tuple[np.ndarray, int]]:
    """A video of generated scenes, each held ``seconds`` under sensor noise (Gaussian, ``noise`` grey levels)
    and a one-pixel camera shake, with cuts between: ``(frame (size, size, 3) uint8 RGB, scene index)``."""
    rng = np.random.default_rng(seed)
    pool = background_pool(tuple(PHOTOS.values()))
    cfg = SceneSetConfig(size=size, seed=seed)
    for scene in range(scenes):
        image = make_scene(rng, pool, cfg)[0].astype(np.float32)
        for _ in range(max(1, round(seconds * rate))):
            shaken = np.roll(image, tuple(int(v) for v in rng.integers(-1, 2, 2)), axis=(0, 1))
            yield np.clip(shaken + rng.normal(0, noise, shaken.shape), 0, 255).astype(np.uint8), scene
