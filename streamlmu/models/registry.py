"""Models by name, as the command line and checkpoints refer to them."""
from __future__ import annotations

from dataclasses import fields

from streamlmu.models.kwt import KWT, KWTConfig
from streamlmu.models.lmuformer import LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.stream import StreamModule

MODEL_NAMES = ("lmuformer", "spiking-lmuformer", "kwt")


def build_model(name: str, preset: str = "tiny", **overrides) -> StreamModule:
    """A fresh model: ``name`` in ``MODEL_NAMES``, ``preset`` ``"tiny"`` or ``"paper"``, config overrides."""
    if name == "lmuformer":
        return LMUFormer(LMUFormerConfig.preset(preset, **overrides))
    if name == "spiking-lmuformer":
        return SpikingLMUFormer(LMUFormerConfig.preset(preset, spiking=True, **overrides))
    if name == "kwt":
        return KWT(KWTConfig.preset(preset, **overrides))
    raise ValueError(f"model must be one of {MODEL_NAMES} (got {name!r})")


def model_name(model: StreamModule) -> str:
    """The registry name of a model instance."""
    names = {LMUFormer: "lmuformer", SpikingLMUFormer: "spiking-lmuformer", KWT: "kwt"}
    if type(model) not in names:
        raise TypeError(f"no registry name for {type(model).__name__}")
    return names[type(model)]


def model_from_config(name: str, config: dict) -> StreamModule:
    """The model ``name`` with exactly the config fields in ``config`` (as ``config.to_dict()`` wrote them)."""
    cls, config_cls = {"lmuformer": (LMUFormer, LMUFormerConfig), "spiking-lmuformer": (SpikingLMUFormer, LMUFormerConfig),
                       "kwt": (KWT, KWTConfig)}.get(name, (None, None))
    if cls is None:
        raise ValueError(f"model must be one of {MODEL_NAMES} (got {name!r})")
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"config of {name} has unknown fields {unknown}")
    return cls(config_cls(**config))
