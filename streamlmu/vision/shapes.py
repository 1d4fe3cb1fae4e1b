"""Split-Shapes: a generated colour image set of ten classes, seven shapes and three textures, on
photographs, cut into five tasks of two classes.

Each image (``size`` pixels square, RGB) is a crop of one of scikit-image's photographs (tinted, mirrored,
turned) with one object on it: a filled shape of one colour (disk, square, triangle, star, cross, ring,
hexagon) or a patch of a two-colour texture (stripes, checkerboard, dots), at a random scale, rotation and
position, partly transparent at random. Deterministic for a seed. Needs the ``vision`` extra.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from streamlmu.vision.splits import Split, consecutive_tasks
from streamlmu.vision.synth import background_pool, photo_background

SHAPES = ("disk", "square", "triangle", "star", "cross", "ring", "hexagon")
TEXTURES = ("stripes", "checker", "dots")
SHAPE_CLASSES = SHAPES + TEXTURES
_SPRITE = 64  # sprites are drawn at this size, then scaled


def _polygon(corners: int, radius: float, inner: float | None = None) -> list[tuple[float, float]]:
    """A regular polygon (or a star with ``inner`` radius between its points) around the sprite's centre."""
    points, steps = [], corners * (2 if inner else 1)
    for k in range(steps):
        r = inner if inner and k % 2 else radius
        a = 2 * math.pi * k / steps - math.pi / 2
        points.append((_SPRITE / 2 + r * math.cos(a), _SPRITE / 2 + r * math.sin(a)))
    return points


def texture(kind: str, a: tuple, b: tuple, rng: np.random.Generator) -> Image.Image:
    """A ``_SPRITE``-pixel RGBA pattern of colours ``a`` and ``b``: ``stripes``, ``checker`` or ``dots``."""
    period = int(rng.integers(6, 14))
    y, x = np.mgrid[:_SPRITE, :_SPRITE]
    if kind == "stripes":
        first = (x // (period // 2)) % 2 == 0
    elif kind == "checker":
        first = ((x // period) + (y // period)) % 2 == 0
    else:  # dots
        first = ((x % period - period / 2) ** 2 + (y % period - period / 2) ** 2) < (period / 3) ** 2
    rgb = np.where(first[..., None], np.array(a, np.uint8), np.array(b, np.uint8))
    return Image.fromarray(np.dstack([rgb, np.full((_SPRITE, _SPRITE), 255, np.uint8)]).astype(np.uint8), "RGBA")


def shape_mask(kind: str) -> Image.Image:
    """``kind`` (one of :data:`SHAPES`) as a ``_SPRITE``-pixel mask ("L": 255 inside, 0 outside), upright, centred."""
    mask = Image.new("L", (_SPRITE, _SPRITE), 0)
    draw, r, c = ImageDraw.Draw(mask), _SPRITE / 2 - 4, _SPRITE / 2
    if kind == "disk":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
    elif kind == "square":
        draw.rectangle((c - r * 0.8, c - r * 0.8, c + r * 0.8, c + r * 0.8), fill=255)
    elif kind == "triangle":
        draw.polygon(_polygon(3, r), fill=255)
    elif kind == "star":
        draw.polygon(_polygon(5, r, r * 0.42), fill=255)
    elif kind == "cross":
        w = r * 0.32
        draw.rectangle((c - w, c - r, c + w, c + r), fill=255)
        draw.rectangle((c - r, c - w, c + r, c + w), fill=255)
    elif kind == "ring":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
        draw.ellipse((c - r * 0.55, c - r * 0.55, c + r * 0.55, c + r * 0.55), fill=0)
    elif kind == "hexagon":
        draw.polygon(_polygon(6, r), fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}; shapes are {', '.join(SHAPES)}")
    return mask


def shape_sprite(kind: str, colour: tuple[int, int, int], texture: Image.Image | None = None) -> Image.Image:
    """``kind`` on a transparent ``_SPRITE``-pixel canvas (RGBA), filled with ``colour`` or cut out of ``texture``."""
    mask = shape_mask(kind)
    if texture is not None:
        sprite = texture.copy()
        sprite.putalpha(mask)
        return sprite
    sprite = Image.new("RGBA", (_SPRITE, _SPRITE), (0, 0, 0, 0))
    sprite.paste(colour + (255,), mask=mask)
    return sprite


def _sprite(label: int, rng: np.random.Generator) -> Image.Image:
    kind = SHAPE_CLASSES[label]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if kind in TEXTURES:
        other = tuple(int(c) for c in (np.array(colour) + rng.integers(90, 166, 3)) % 256)
        sprite = texture(kind, colour, other, rng)
        mask = Image.new("L", (_SPRITE, _SPRITE), 0)
        ImageDraw.Draw(mask).rectangle((6, 6, _SPRITE - 7, _SPRITE - 7), fill=255)
        sprite.putalpha(mask)
        return sprite
    return shape_sprite(kind, colour)


def shape_image(label: int, rng: np.random.Generator, pool: list[np.ndarray], size: int = 32) -> np.ndarray:
    """One image of class ``label``: ``(size, size, 3)`` uint8 RGB."""
    image = photo_background(rng, pool, size).convert("RGBA")
    scale = int(size * rng.uniform(0.45, 0.85))
    sprite = _sprite(label, rng).rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR)
    sprite = sprite.resize((scale, scale), Image.BILINEAR)
    if rng.random() < 0.3:  # partly transparent
        sprite.putalpha(sprite.getchannel("A").point(lambda v: int(v * 0.7)))
    x, y = (int(v) for v in rng.integers(0, size - scale + 1, 2))
    image.alpha_composite(sprite, (x, y))
    return np.asarray(image.convert("RGB"))


def split_shapes(train_per_class: int = 300, test_per_class: int = 60, size: int = 32, seed: int = 0) -> Split:
    """Split-Shapes: ``(N, 3, size, size)`` float images in [0, 1], five tasks of two classes."""
    rng = np.random.default_rng(seed)
    pool = background_pool()
    parts = []
    for count in (train_per_class, test_per_class):
        labels = np.repeat(np.arange(len(SHAPE_CLASSES)), count)
        images = np.stack([shape_image(int(label), rng, pool, size) for label in labels])
        parts.append((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(labels)))
    return Split("split-shapes", parts[0], parts[1], consecutive_tasks(len(SHAPE_CLASSES), 2))
