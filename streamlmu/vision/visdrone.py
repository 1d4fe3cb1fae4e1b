"""VisDrone-DET annotations to YOLO format, so the paper's experiment runs on the real data.

VisDrone-DET (Zhu et al., 2021) ships each split as ``images/NAME.jpg`` and
``annotations/NAME.txt``, one object per line::

    left,top,width,height,score,category,truncation,occlusion

in pixels; ``score`` 0 marks an ignored region; categories 1-10 are the classes
of :data:`VISDRONE_CLASSES` (0: ignored region, 11: others, both left out).
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm import tqdm

from streamlmu.vision.synth import write_data_yaml

VISDRONE_CLASSES = ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle",
                    "bus", "motor")
_SPLITS = {"train": "train", "val": "val", "test-dev": "test"}


def convert_split(src: Path, out: Path, split: str, progress: bool = True) -> int:
    """One VisDrone split folder (``images/``, ``annotations/``) into ``out/images/split`` and ``out/labels/split``;
    returns the number of images."""
    images, annotations = src / "images", src / "annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise FileNotFoundError(f"{src} must hold VisDrone's images/ and annotations/ folders")
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    files = sorted(images.glob("*.jpg"))
    for image_path in tqdm(files, desc=f"convert-visdrone {split}", unit="image", disable=not progress):
        with Image.open(image_path) as image:
            width, height = image.size
        lines = []
        notes = annotations / f"{image_path.stem}.txt"
        if not notes.is_file():
            raise FileNotFoundError(f"{image_path.name} has no annotation file {notes}")
        for number, row in enumerate(notes.read_text().splitlines(), 1):
            fields = [f for f in row.strip().split(",") if f != ""]
            if not fields:
                continue
            if len(fields) < 6:
                raise ValueError(f"{notes}:{number}: expected left,top,width,height,score,category,... (got {row!r})")
            left, top, w, h = (float(v) for v in fields[:4])
            score, category = int(fields[4]), int(fields[5])
            if score == 0 or not 1 <= category <= len(VISDRONE_CLASSES) or w <= 0 or h <= 0:
                continue
            lines.append(f"{category - 1} {(left + w / 2) / width:.6f} {(top + h / 2) / height:.6f} "
                         f"{w / width:.6f} {h / height:.6f}\n")
        target = out / "images" / split / image_path.name
        if not target.exists():
            target.symlink_to(image_path.resolve())
        (out / "labels" / split / f"{image_path.stem}.txt").write_text("".join(lines))
    return len(files)


def convert_visdrone(src: str | Path, out: str | Path, progress: bool = True) -> Path:
    """Convert VisDrone-DET under ``src`` (one split folder, or a folder of ``*-train``, ``*-val``,
    ``*-test-dev`` split folders) into YOLO format under ``out``; returns its ``data.yaml``."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"no VisDrone folder at {src}")
    if (src / "annotations").is_dir():
        found = {"train": src}
    else:
        found = {split: folder for folder in sorted(src.iterdir()) if folder.is_dir()
                 for suffix, split in _SPLITS.items() if folder.name.endswith(f"-{suffix}")}
    if not found:
        raise FileNotFoundError(f"{src} holds neither images/ + annotations/ nor VisDrone split folders "
                                f"(*-train, *-val, *-test-dev)")
    for split, folder in found.items():
        convert_split(folder, out, split, progress)
    val = "images/val" if "val" in found else "images/train"
    return write_data_yaml(out, VISDRONE_CLASSES, val=val)
