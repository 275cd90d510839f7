"""The 3D UNet: ``spatial`` (attention within a frame and to the text), ``temporal`` (convolution and
attention across frames), ``blocks`` (one resolution level), ``model`` (the whole network,
UNet3DConditionModel) and ``attention_maps`` (reading its attention for pictures)."""

from .attention_maps import AttentionMaps, capture_attention
from .model import UNet3DConditionModel, UNetConfig

__all__ = ["AttentionMaps", "UNet3DConditionModel", "UNetConfig", "capture_attention"]
