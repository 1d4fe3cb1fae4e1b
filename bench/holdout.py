"""Leave-one-voice-out views of a synthetic corpus, as corpus folders the apps take unchanged.

``holdout_views(root, column, value, out)`` writes two folders of symbolic links
to ``root``'s clips (and its background noise):

* ``out/rest``: every clip whose ``metadata.csv`` ``column`` is not ``value``, in
  the corpus's own splits: training, validation and testing without the voice;
* ``out/voice``: only the voice's clips, every one of them listed in
  ``testing_list.txt`` (a held-out voice is unseen in every split).

Both keep ``metadata.csv`` (their own rows), so word times and ``--by`` work.

``union_view(root, extra, out)`` writes the clips of two corpora of different
voices in their own splits; with ``extra_in_training`` every clip of ``extra``
is a training clip (another engine's voices added to the training data, the
validation and test splits unchanged).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from streamlmu.data.speech_commands import BACKGROUND
from streamlmu.data.synth import METADATA_FIELDS, read_metadata


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_symlink():
        os.symlink(source.resolve(), target)


def _write_view(root: Path, view: Path, rows: dict[str, dict[str, str]], all_testing: bool,
                sources: dict[str, Path] | None = None) -> Path:
    """``rows`` (relative path -> metadata row) linked from ``root``, or from the corpus ``sources`` names for them."""
    sources = sources or {}
    for rel in rows:
        _link(sources.get(rel, root) / rel, view / rel)
    for noise in sorted((root / BACKGROUND).glob("*.wav")):
        _link(noise, view / BACKGROUND / noise.name)
    for split in ("validation", "testing"):
        listed = sorted(rel for rel, row in rows.items()
                        if (split == "testing" if all_testing else row["split"] == split))
        (view / f"{split}_list.txt").write_text("".join(f"{rel}\n" for rel in listed))
    with open(view / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows.values())
    return view


def holdout_views(root: str | Path, column: str, value: str, out: str | Path) -> tuple[Path, Path]:
    """``(rest, voice)``: the corpus without the clips whose ``column`` is ``value``, and those clips alone."""
    root, out = Path(root), Path(out)
    rows = read_metadata(root)
    if not rows:
        raise FileNotFoundError(f"{root} has no metadata.csv; leave-one-voice-out needs a synthetic corpus")
    held = {rel: row for rel, row in rows.items() if row[column] == value}
    if not held:
        values = sorted({row[column] for row in rows.values()})
        raise ValueError(f"no clip of {root} has {column}={value!r} (its values: {', '.join(values[:20])}...)")
    rest = {rel: row for rel, row in rows.items() if rel not in held}
    return _write_view(root, out / "rest", rest, False), _write_view(root, out / "voice", held, True)


def union_view(root: str | Path, extra: str | Path, out: str | Path, extra_in_training: bool = False) -> Path:
    """The clips of ``root`` and of ``extra`` (another corpus) in their splits, or ``extra``'s all in training."""
    root, extra = Path(root), Path(extra)
    rows, added = read_metadata(root), read_metadata(extra)
    if not rows or not added:
        raise FileNotFoundError(f"{root} or {extra} has no metadata.csv; a union view needs synthetic corpora")
    clash = sorted(set(rows) & set(added))
    if clash:
        raise ValueError(f"{root} and {extra} share clip names ({clash[0]}...): they are not two corpora of "
                         f"different voices")
    rows.update({rel: {**row, "split": "training"} if extra_in_training else row for rel, row in added.items()})
    return _write_view(root, Path(out), rows, False, dict.fromkeys(added, extra))
