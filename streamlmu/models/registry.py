"""Models by name, as the command line and checkpoints refer to them."""
from __future__ import annotations

from dataclasses import fields

from streamlmu.models.ensemble import Ensemble, EnsembleConfig
from streamlmu.models.kwt import KWT, KWTConfig
from streamlmu.models.lmuformer import LMUFormer, LMUFormerConfig, SpikingLMUFormer
from streamlmu.stream import StreamModule

# name -> (model class, config class, fixed preset arguments)
_MODELS: dict[str, tuple[type, type, dict]] = {
    LMUFormer.registry_name: (LMUFormer, LMUFormerConfig, {}),
    SpikingLMUFormer.registry_name: (SpikingLMUFormer, LMUFormerConfig, {"spiking": True}),
    KWT.registry_name: (KWT, KWTConfig, {}),
}
MODEL_NAMES = tuple(_MODELS)  # what ``train --model`` builds
ENSEMBLE = Ensemble.registry_name  # built from trained models (``Ensemble([...])``), never trained as one


def _entry(name: str) -> tuple[type, type, dict]:
    if name not in _MODELS:
        raise ValueError(f"model must be one of {MODEL_NAMES} (got {name!r})")
    return _MODELS[name]


def _check_settings(name: str, config_cls: type, settings: dict) -> None:
    """An error naming the settings ``config_cls`` does not have, and the ones it has."""
    known = [f.name for f in fields(config_cls)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(f"{name} has no setting {unknown} (its settings: {known})")


def build_model(name: str, preset: str = "tiny", **overrides) -> StreamModule:
    """A fresh model: ``name`` in ``MODEL_NAMES``, ``preset`` ``"tiny"`` or ``"paper"``, config overrides."""
    return _entry(name)[0](preset_config(name, preset, **overrides))


def preset_config(name: str, preset: str = "tiny", **overrides) -> object:
    """The config ``build_model(name, preset, **overrides)`` would build from."""
    _, config_cls, fixed = _entry(name)
    _check_settings(name, config_cls, overrides)
    return config_cls.preset(preset, **fixed, **overrides)


def model_name(model: StreamModule) -> str:
    """The registry name of a model instance."""
    name = getattr(type(model), "registry_name", None)
    registered = Ensemble if name == ENSEMBLE else _MODELS.get(name, (None,))[0]
    if type(model) is not registered:  # a subclass would be rebuilt as its base class
        raise TypeError(f"no registry name for {type(model).__name__}")
    return name


def model_from_config(name: str, config: dict) -> StreamModule:
    """The model ``name`` with exactly the config fields in ``config`` (as ``config.to_dict()`` wrote them)."""
    if name == ENSEMBLE:
        _check_settings(name, EnsembleConfig, config)
        return Ensemble([model_from_config(member, settings) for member, settings in config["members"]])
    cls, config_cls, _ = _entry(name)
    _check_settings(name, config_cls, config)
    return cls(config_cls(**config))
