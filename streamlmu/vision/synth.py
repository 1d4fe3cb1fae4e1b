"""A generated aerial-style detection set in YOLO format, deterministic for a seed.

Seen from above, small and medium objects of five classes are drawn as distinct
shapes (:data:`CLASSES`): cars, trucks and buses (rounded bodies with windows,
cabs or roof stripes), pedestrians (a head on shoulders) and bicycles (two
wheels on a frame). Each gets a random size, rotation, colour and texture
(speckle or stripes) and a soft shadow; distractor shapes (blobs, lines,
rectangles that belong to no class) and occluding "tree crowns" drawn over
some objects add clutter. Backgrounds are random crops of real photographs
that ship inside scikit-image (``skimage.data``), tinted, flipped and rescaled.

Layout (what ultralytics reads)::

    DIR/data.yaml                     path, train/val image folders, class names
    DIR/images/{train,val}/NNNNN.png
    DIR/labels/{train,val}/NNNNN.txt  one line per object: class cx cy w h (relative to the image)

A box is the axis-aligned box of the whole object, occluded part included (as
VisDrone annotates); an object less than a third visible is left out of the
labels and kept in the picture as clutter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

CLASSES = ("car", "truck", "bus", "pedestrian", "bicycle")
_BACKGROUNDS = ("grass", "gravel", "brick", "moon", "coffee", "rocket", "astronaut", "chelsea",
                "immunohistochemistry", "stereo_motorcycle", "hubble_deep_field", "retina", "coins")
# length range in pixels at a 320 px image, and length / width
_SIZES = {"car": ((20, 42), 2.0), "truck": ((34, 66), 2.6), "bus": ((46, 84), 3.2),
          "pedestrian": ((9, 16), 1.0), "bicycle": ((13, 23), 2.2)}


@dataclass(frozen=True)
class DetectionSetConfig:
    """How many images of which size, how many objects each, and the seed everything follows."""

    train: int = 400
    val: int = 100
    imgsz: int = 320
    objects: tuple[int, int] = (4, 18)       # labelled objects per image (before occlusion)
    distractors: tuple[int, int] = (2, 10)   # clutter shapes per image
    occluders: tuple[int, int] = (0, 4)      # tree crowns per image
    seed: int = 0


def background_pool(names: tuple[str, ...] = _BACKGROUNDS) -> list[np.ndarray]:
    """scikit-image's photographs ``names`` (``skimage.data`` functions) as RGB uint8 arrays ``(H, W, 3)``."""
    from skimage import data
    pool = []
    for name in names:
        image = getattr(data, name)()
        image = np.asarray(image[0] if isinstance(image, tuple) else image)  # a stereo pair: its left view
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        pool.append(image[..., :3].astype(np.uint8))
    return pool


def photo_background(rng: np.random.Generator, pool: list[np.ndarray], size: int) -> Image.Image:
    """A random square crop of a photograph of ``pool``, tinted, maybe mirrored and turned, ``size`` pixels."""
    image = pool[rng.integers(len(pool))]
    h, w = image.shape[:2]
    crop = int(rng.uniform(0.4, 1.0) * min(h, w))
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    patch = image[y:y + crop, x:x + crop].astype(np.float32)
    patch = patch * rng.uniform(0.6, 1.3, 3) + rng.uniform(-30, 30, 3)  # tint and brightness
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    out = Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return out.rotate(90 * int(rng.integers(4)))


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.35:  # greys, white and black, as most vehicles are
        v = int(rng.choice([20, 60, 130, 200, 240]) + rng.integers(-15, 16))
        return (v, v, v)
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _sprite(kind: str, rng: np.random.Generator, scale: float) -> Image.Image:
    """One object drawn lengthwise along x on a transparent canvas (RGBA)."""
    (low, high), aspect = _SIZES[kind]
    length = max(4.0, rng.uniform(low, high) * scale)
    width = max(3.0, length / aspect * rng.uniform(0.85, 1.15))
    L, W = int(math.ceil(length)), int(math.ceil(width))
    canvas = Image.new("RGBA", (L + 4, W + 4), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    body, x0, y0, x1, y1 = _colour(rng), 2, 2, L + 1, W + 1
    dark = tuple(max(0, c - 90) for c in body) + (255,)
    light = tuple(min(255, c + 80) for c in body) + (255,)
    if kind in ("car", "truck", "bus"):
        draw.rounded_rectangle((x0, y0, x1, y1), radius=max(1, W // 4), fill=body + (255,))
        if kind == "car":  # windscreen and rear window
            draw.rectangle((x0 + L * 0.55, y0 + W * 0.15, x0 + L * 0.7, y1 - W * 0.15), fill=dark)
            draw.rectangle((x0 + L * 0.12, y0 + W * 0.2, x0 + L * 0.22, y1 - W * 0.2), fill=dark)
        elif kind == "truck":  # a cab apart from the load
            cab = _colour(rng) + (255,)
            draw.rectangle((x0 + L * 0.78, y0, x1, y1), fill=cab)
            draw.line((x0 + L * 0.75, y0, x0 + L * 0.75, y1), fill=dark, width=max(1, W // 8))
        else:  # roof stripes and windows along both sides
            for k in range(1, 6):
                x = x0 + L * k / 6
                draw.line((x, y0 + 1, x, y1 - 1), fill=light, width=1)
            draw.rectangle((x0 + 1, y0 + 1, x1 - 1, y0 + max(1, W // 6)), fill=dark)
            draw.rectangle((x0 + 1, y1 - max(1, W // 6), x1 - 1, y1 - 1), fill=dark)
    elif kind == "pedestrian":  # shoulders and a head, from above
        draw.ellipse((x0, y0, x1, y1), fill=body + (255,))
        r = W * 0.28
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        skin = tuple(int(c) for c in rng.integers([120, 80, 50], [240, 190, 160])) + (255,)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=skin)
    else:  # bicycle: two wheels and a frame
        r = W * 0.45
        wheel = dark if rng.random() < 0.7 else body + (255,)
        for cx in (x0 + r, x1 - r):
            draw.ellipse((cx - r, (y0 + y1) / 2 - r, cx + r, (y0 + y1) / 2 + r), outline=wheel, width=max(1, W // 5))
        draw.line((x0 + r, (y0 + y1) / 2, x1 - r, (y0 + y1) / 2), fill=body + (255,), width=max(1, W // 4))
    if kind != "bicycle":  # texture: speckle or stripes inside the body
        pixels = np.asarray(canvas).astype(np.int16)
        inside = pixels[..., 3] > 0
        if rng.random() < 0.5:
            pixels[..., :3] += rng.integers(-25, 26, pixels[..., :3].shape).astype(np.int16)
        else:
            pixels[:, ::3, :3] -= 30
        pixels[..., 3] = np.where(inside, 255, 0)
        canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGBA")
    return canvas


def _distractor(rng: np.random.Generator, scale: float) -> Image.Image:
    """A shape of no class: a blob, a line or an outlined rectangle."""
    size = int(rng.uniform(6, 40) * scale) + 4
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    colour = _colour(rng) + (int(rng.integers(150, 256)),)
    choice = rng.integers(3)
    if choice == 0:
        points = [(size / 2 + rng.uniform(0.2, 0.5) * size * math.cos(a), size / 2 + rng.uniform(0.2, 0.5) * size * math.sin(a))
                  for a in np.sort(rng.uniform(0, 2 * math.pi, 7))]
        draw.polygon(points, fill=colour)
    elif choice == 1:
        draw.line((0, rng.uniform(0, size), size, rng.uniform(0, size)), fill=colour, width=max(1, size // 10))
    else:
        draw.rectangle((1, 1, size - 2, max(2.0, size * rng.uniform(0.3, 1.0) - 2)), outline=colour,
                       width=max(1, size // 12))
    return canvas


def _tree(rng: np.random.Generator, scale: float) -> Image.Image:
    size = int(rng.uniform(14, 36) * scale) + 2
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    green = (int(rng.integers(20, 70)), int(rng.integers(70, 140)), int(rng.integers(20, 60)), 255)
    ImageDraw.Draw(canvas).ellipse((0, 0, size - 1, size - 1), fill=green)
    return canvas.filter(ImageFilter.GaussianBlur(1))


def _place(image: Image.Image, sprite: Image.Image, rng: np.random.Generator, coverage: np.ndarray | None
           ) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste ``sprite`` at a random angle and place; its alpha mask on the image grid and its offset."""
    sprite = sprite.rotate(float(rng.uniform(0, 360)), resample=Image.BILINEAR, expand=True)
    size = image.size[0]
    x = int(rng.integers(-sprite.size[0] // 3, size - 2 * sprite.size[0] // 3))
    y = int(rng.integers(-sprite.size[1] // 3, size - 2 * sprite.size[1] // 3))
    shadow = Image.new("RGBA", sprite.size, (0, 0, 0, 90))
    shadow.putalpha(sprite.getchannel("A").point(lambda a: 90 if a > 128 else 0))
    image.paste(shadow, (x + 2, y + 2), shadow)
    image.paste(sprite, (x, y), sprite)
    mask = np.zeros((size, size), bool)
    alpha = np.asarray(sprite.getchannel("A")) > 128
    ys, xs = slice(max(y, 0), min(y + alpha.shape[0], size)), slice(max(x, 0), min(x + alpha.shape[1], size))
    mask[ys, xs] = alpha[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
    if coverage is not None:
        coverage |= mask
    return mask, (x, y)


def make_image(rng: np.random.Generator, pool: list[np.ndarray], cfg: DetectionSetConfig
               ) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """One picture and its labels ``(class, cx, cy, w, h)`` relative to the image size."""
    size = cfg.imgsz
    scale = size / 320 * rng.uniform(0.7, 1.4)  # flight height
    image = photo_background(rng, pool, size).convert("RGBA")
    for _ in range(rng.integers(*cfg.distractors, endpoint=True)):
        _place(image, _distractor(rng, scale), rng, None)
    objects = []
    for _ in range(rng.integers(*cfg.objects, endpoint=True)):
        kind = int(rng.integers(len(CLASSES)))
        mask, _ = _place(image, _sprite(CLASSES[kind], rng, scale), rng, None)
        if mask.sum() >= 6:
            objects.append((kind, mask))
    hidden = np.zeros((size, size), bool)
    for _ in range(rng.integers(*cfg.occluders, endpoint=True)):
        _place(image, _tree(rng, scale), rng, hidden)
    labels = []
    for kind, mask in objects:
        if (mask & ~hidden).sum() < mask.sum() / 3:
            continue
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        labels.append((kind, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return image.convert("RGB"), labels


def write_detection_set(out: str | Path, cfg: DetectionSetConfig = DetectionSetConfig(),
                        progress: bool = True) -> Path:
    """Write the set under ``out``; returns the path of its ``data.yaml``. The same seed gives the same files."""
    out = Path(out)
    pool = background_pool()
    for split, count, stream in (("train", cfg.train, 0), ("val", cfg.val, 1)):
        images, labels = out / "images" / split, out / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for index in tqdm(range(count), desc=f"synth-detection {split}", unit="image", disable=not progress):
            rng = np.random.default_rng([cfg.seed, stream, index])
            image, boxes = make_image(rng, pool, cfg)
            image.save(images / f"{index:05d}.png")
            (labels / f"{index:05d}.txt").write_text(
                "".join(f"{k} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for k, cx, cy, w, h in boxes))
    return write_data_yaml(out, CLASSES)


def write_data_yaml(root: Path, names: tuple[str, ...], train: str = "images/train", val: str = "images/val") -> Path:
    """A YOLO dataset description of the folders under ``root``."""
    lines = [f"path: {root.resolve()}", f"train: {train}", f"val: {val}", "names:"]
    lines += [f"  {i}: {name}" for i, name in enumerate(names)]
    path = root / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
