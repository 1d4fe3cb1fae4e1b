"""ultralytics, imported for offline use: no network, no downloads, settings kept in a folder of ours.

ultralytics (AGPL-3.0, the ``vision`` extra) looks for the network when imported
and fetches a font the first time it plots. :func:`ultralytics` sets
``YOLO_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` (default ``~/.cache/streamlmu/ultralytics``,
or ``$STREAMLMU_YOLO_DIR``) before the import and puts matplotlib's DejaVu Sans there
under the font's expected name, so nothing is fetched.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

_INSTALL = "pip install 'streamlmu[vision]'"


def config_dir() -> Path:
    return Path(os.environ.get("STREAMLMU_YOLO_DIR", Path.home() / ".cache" / "streamlmu" / "ultralytics"))


def require(module: str) -> ModuleType:
    """Import an optional vision dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module} is needed for streamlmu.vision's detector: {_INSTALL}") from err


def ultralytics() -> ModuleType:
    """The ``ultralytics`` package, set up to work offline (call before any other import of it)."""
    if "ultralytics" not in sys.modules:
        folder = config_dir()
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_CONFIG_DIR", str(folder))
        fonts = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
        fonts.mkdir(parents=True, exist_ok=True)
        import matplotlib
        source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if not (fonts / name).exists():
                shutil.copyfile(source, fonts / name)
    module = require("ultralytics")
    from ultralytics.utils import SETTINGS
    if SETTINGS.get("sync"):
        SETTINGS.update({"sync": False})  # no usage reports
    return module
