"""Drawing the noise a diffusion model starts from (and that stochastic samplers add at each step).

Both the pipeline (the starting latents) and the schedulers (DDPM, DDIM with eta > 0, Euler
ancestral) draw through ``draw_noise``, so one seeded generator gives the same numbers as diffusers'
``randn_tensor`` in the same order. (Techniques that rearrange the noise, such as FreeNoise's
rescheduling, live with their technique in ``t2vlab.techniques``.)
"""

from __future__ import annotations

import math

import torch


def draw_noise(shape, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn exactly as diffusers' ``randn_tensor`` draws it: a CPU generator
    used for another device draws on the CPU and moves the result; a list of generators draws one
    batch item from each. Same generator => bit-identical noise."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    rand_device = device
    if first is not None and first.device.type != device.type:
        if first.device.type != "cpu":
            raise ValueError(f"cannot draw a {device} tensor from a {first.device.type} generator")
        rand_device = torch.device("cpu")
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, (list, tuple)):
        parts = [torch.randn((1, *shape[1:]), generator=g, device=rand_device, dtype=dtype) for g in generator]
        return torch.cat(parts).to(device)
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)


def video_noise(shape, generator, device, dtype, shared_ratio=0.0) -> torch.Tensor:
    """Noise for a video (B, C, F, h, w); with VideoFusion's decomposition when ``shared_ratio`` = r > 0.

    Every frame's noise is sqrt(r) * base + sqrt(1 - r) * residual_f, with one ``base`` shared by all
    frames, so the frames start correlated (correlation r) while each is still standard normal.
    The residuals are drawn first, then the base (the order fixes which numbers a seed gives).
    """
    noise = draw_noise(shape, generator, device, dtype)
    if shared_ratio:
        b, c, _, h, w = shape
        base = draw_noise((b, c, 1, h, w), generator, device, dtype)
        noise = math.sqrt(shared_ratio) * base + math.sqrt(1 - shared_ratio) * noise
    return noise


def frame_correlation(noise) -> torch.Tensor:
    """How alike the frames of a video's noise are: noise (B, C, F, h, w) -> (F, F), the correlation between
    frames f and g over all videos, channels and pixels (every value of frame f paired with the same value of
    frame g). Independent frames give the identity; VideoFusion's shared ratio r gives r off the diagonal."""
    frames = noise.shape[2]
    per_frame = noise.transpose(0, 2).reshape(frames, -1)  # (F, B*C*h*w): frame f's values in one row
    return torch.corrcoef(per_frame.double()).to(noise.dtype)
