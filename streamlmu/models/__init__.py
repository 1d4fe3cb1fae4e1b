"""Models built from stream operators."""
from streamlmu.models.lmuformer import PRESETS, LMUFormer, LMUFormerConfig, LMUFormerState, SpikingLMUFormer

__all__ = ["PRESETS", "LMUFormer", "LMUFormerConfig", "LMUFormerState", "SpikingLMUFormer"]
