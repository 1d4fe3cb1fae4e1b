"""Keyword-spotting models shipped with the package; each has its model card ``<name>.md`` beside it.

``streamlmu.load_model(name)`` takes one of :func:`available` as well as a path.
"""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent
# The model `streamlmu listen` and `kws-eval` use unless told otherwise: trained for continuous spotting
# of the ten SCv2 keywords, with calibrated thresholds.
DEFAULT_KWS_MODEL = "lmuformer-tiny-phrases12-kws"
# 30 s of synthetic speech with keywords among other words over noise, and its word times
# (made by scripts/make_demo_recording.py from the synthetic corpus's test split).
DEMO_RECORDING = FOLDER / "demo-keywords.wav"
DEMO_TRUTH = FOLDER / "demo-keywords.json"


def available() -> tuple[str, ...]:
    """Names of the bundled checkpoints (file names without ``.pt``)."""
    return tuple(sorted(p.stem for p in FOLDER.glob("*.pt")))


def pretrained_path(name: str) -> Path:
    """The file of a bundled model, or an error listing the names there are."""
    path = FOLDER / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no bundled model named {name!r}; bundled: {', '.join(available()) or 'none'}")
    return path
