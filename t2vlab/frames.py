"""Folding the frames of a video into the batch, and back: the one reshape the whole model relies on.

A video batch is (B, C, F, H, W). Layers that work on images (convolutions, GroupNorm, spatial
attention, the VAE, a scheduler's step) see each frame as its own image, (B*F, C, H, W), frame
index fastest: video 0's frames 0..F-1, then video 1's. Temporal layers unfold it to work along F.
"""

from __future__ import annotations

import torch


def frames_to_batch(video: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W)."""
    return video.transpose(1, 2).flatten(0, 1)


def batch_to_frames(images: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W); the inverse of ``frames_to_batch``."""
    return images.unflatten(0, (-1, num_frames)).transpose(1, 2)
