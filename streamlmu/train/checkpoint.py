"""Deprecated home of the checkpoint functions, which now live in :mod:`streamlmu.audio.bundle`."""
from __future__ import annotations

from streamlmu.audio import bundle
from streamlmu.warn import warn_caller


def __getattr__(name: str):
    if name in bundle.__all__:
        warn_caller(f"streamlmu.train.checkpoint.{name} moved to streamlmu.audio.bundle.{name}", DeprecationWarning)
        return getattr(bundle, name)
    raise AttributeError(f"module 'streamlmu.train.checkpoint' has no attribute {name!r}")
