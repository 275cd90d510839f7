"""The 3D UNet: ``layers`` (temporal conv, spatial and temporal transformers), ``blocks`` (one
resolution level) and ``model`` (the whole network, UNet3DConditionModel)."""

from .model import UNet3DConditionModel, UNetConfig

__all__ = ["UNet3DConditionModel", "UNetConfig"]
