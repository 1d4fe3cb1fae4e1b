"""Checkpoints: everything needed to use a trained model (and to resume training) in one file.

Inference needs nothing more than this module: loading a model never imports
:mod:`streamlmu.train`.

A checkpoint is a dict saved with ``torch.save``::

    format      CHECKPOINT_FORMAT
    model       registry name ("lmuformer", "spiking-lmuformer", "kwt")
    config      the model config as a dict
    labels      class names in label-index order
    features    the front end's config as a dict (a config of audio.frontend: fbank, speech embedding, ASR encoder)
    weights     model.state_dict()
    training    optimiser, scheduler, RNG states, epoch, metrics (absent in a bare model file)
    thresholds  optional: keyword -> detection threshold calibrated for live spotting

Files are written to a temporary name and renamed, so a run killed while
saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from streamlmu.audio.frontend import FrontEndConfig, config_from_dict
from streamlmu.models import Ensemble
from streamlmu.models.registry import model_from_config, model_name
from streamlmu.pretrained import pretrained_path
from streamlmu.stream import StreamModule

CHECKPOINT_FORMAT = "streamlmu-checkpoint-1"
__all__ = ["CHECKPOINT_FORMAT", "load_model", "read_checkpoint", "save_checkpoint", "save_ensemble",
           "save_thresholds"]


def save_checkpoint(path: str | Path, model: StreamModule, labels: tuple[str, ...] | list[str],
                    features: FrontEndConfig, training: dict | None = None) -> None:
    """Write ``model`` with its labels and feature parameters (and optional training state) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "model": model_name(model), "config": model.config.to_dict(),
               "labels": list(labels), "features": features.to_dict(), "weights": model.state_dict()}
    if training is not None:
        payload["training"] = training
    _write(payload, Path(path))


def save_thresholds(source: str | Path, target: str | Path, thresholds: dict[str, float]) -> None:
    """Write checkpoint ``source`` (a file or bundled name) to ``target`` with calibrated keyword ``thresholds``."""
    payload = read_checkpoint(source)
    unknown = [k for k in thresholds if k not in payload["labels"]]
    if unknown:
        raise ValueError(f"thresholds for {', '.join(unknown)}, which are not labels of {source}")
    payload["thresholds"] = {k: float(v) for k, v in thresholds.items()}
    _write(payload, Path(target))


def save_ensemble(sources: list[str | Path], target: str | Path) -> Ensemble:
    """Write an :class:`Ensemble` of the checkpoints ``sources`` (files or bundled names) to ``target``.

    The members must share labels and feature parameters. Calibrated thresholds
    are not carried over: the ensemble's scores are not any member's.
    """
    models = [load_model(source) for source in sources]
    first = models[0]
    for source, model in zip(sources[1:], models[1:]):
        for what, mine, theirs in (("labels", model.labels, first.labels),
                                   ("feature parameters", model.features, first.features)):
            if mine != theirs:
                raise ValueError(f"{source} has other {what} than {sources[0]}: {mine} against {theirs}")
    ensemble = Ensemble(models).eval()
    save_checkpoint(target, ensemble, first.labels, first.features)
    return ensemble


def _write(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of a file or a bundled model's name, or an error that names the file and what is wrong."""
    if not Path(path).exists() and Path(path).suffix == "" and "/" not in str(path):
        path = pretrained_path(str(path))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise ValueError(f"{path} is not a readable streamlmu checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a streamlmu checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def load_model(path: str | Path) -> StreamModule:
    """A trained model, ready for inference (eval mode), from a checkpoint file or a bundled model's name.

    The model carries ``labels`` (class names), ``features`` (its front end's config) and ``thresholds``
    (calibrated keyword thresholds, or None).
    """
    payload = read_checkpoint(path)
    model = model_from_config(payload["model"], payload["config"])
    model.load_state_dict(payload["weights"])
    model.labels = tuple(payload["labels"])
    model.features = config_from_dict(payload["features"])
    model.thresholds = payload.get("thresholds")
    return model.eval()
