"""Models built from stream operators."""
from streamlmu.models.ensemble import Ensemble, EnsembleConfig, EnsembleState
from streamlmu.models.kwt import KWT, KWT_PRESETS, KWTConfig, KWTState
from streamlmu.models.lmuformer import PRESETS, LMUFormer, LMUFormerConfig, LMUFormerState, SpikingLMUFormer

__all__ = ["Ensemble", "EnsembleConfig", "EnsembleState", "KWT", "KWTConfig", "KWTState", "KWT_PRESETS", "PRESETS",
           "LMUFormer", "LMUFormerConfig", "LMUFormerState", "SpikingLMUFormer"]
