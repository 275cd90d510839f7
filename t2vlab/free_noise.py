"""FreeNoise (Qiu et al., 2023, "FreeNoise: Tuning-Free Longer Video Diffusion via Noise Rescheduling").

The model was trained on clips of ``context_length`` frames (16 for ms-1.7b, 8 for the toy). Asked for
many more, two things go wrong: every frame's noise is independent, so distant frames have nothing
in common to start from; and each temporal attention spreads its weights over far more frames than
it ever saw, so each frame reads a thin average of all of them. FreeNoise fixes both, without training:

1. noise rescheduling (``t2vlab.noise.reschedule_noise``): later frames reuse the first window's
   noise, shuffled ``context_stride`` frames at a time, so the video starts correlated;
2. windowed temporal attention (``t2vlab.unet.temporal.attend_in_windows``): each temporal attention
   attends within overlapping windows of ``context_length`` frames, ``context_stride`` apart; a frame's
   result is the weighted mean over the windows holding it (``weighting_scheme``). Temporal
   convolutions and everything per frame still see all frames.

This module holds the pipeline's settings for it; ``pipe.enable_free_noise(...)`` switches both parts
on (the UNet's part through ``unet.enable_free_noise``). With ``context_length`` >= the number of
frames both parts do nothing, and the result is the plain one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from .noise import NOISE_TYPES, reschedule_noise
from .unet.temporal import ContextWindows


@dataclass(frozen=True)
class FreeNoise:
    """The settings of ``pipe.enable_free_noise(...)``: the windows of the temporal attention and how the
    starting noise is rescheduled (``noise_type``: "shuffle_context", "repeat_context" or "random")."""

    context_length: int = 16
    context_stride: int = 4
    weighting_scheme: str = "pyramid"
    noise_type: str = "shuffle_context"

    def __post_init__(self):
        ContextWindows(self.context_length, self.context_stride, self.weighting_scheme)  # checks the three
        if not isinstance(self.noise_type, str) or self.noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}")

    def reschedule(self, noise, generator=None):
        """The starting noise (B, C, F, h, w) with later frames reusing the first window's noise."""
        return reschedule_noise(noise, self.context_length, self.context_stride, self.noise_type, generator)
