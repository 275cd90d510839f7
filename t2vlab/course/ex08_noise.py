"""Notebook 08's exercises: VideoFusion's shared + residual noise, and how alike it makes the frames."""

from __future__ import annotations

import torch

from ..noise import frame_correlation, video_noise
from .core import Exercise, call, compare, generator, register


def decomposed_noise(shape, generator, r):
    """eps_f = sqrt(r) b + sqrt(1 - r) rho_f: shape (B, C, F, h, w); the residuals rho (one per frame, the
    whole shape) drawn first, then the base b (B, C, 1, h, w), shared by every frame, from ``generator``."""
    residual = torch.randn(shape, generator=generator)
    base = torch.randn((shape[0], shape[1], 1, *shape[3:]), generator=generator)
    return r ** 0.5 * base + (1 - r) ** 0.5 * residual


def check_decomposed_noise(fn):
    shape, r = (2, 4, 6, 3, 3), 0.7
    want = video_noise(shape, generator(8), "cpu", torch.float32, r)
    g = generator(8)
    residual = torch.randn(shape, generator=g)
    base = torch.randn((2, 4, 1, 3, 3), generator=g)
    g = generator(8)
    base_first = torch.randn((2, 4, 1, 3, 3), generator=g)
    residual_after = torch.randn(shape, generator=g)
    compare(call(fn, shape, generator(8), r), want, "decomposed_noise(shape, generator, 0.7)", mistakes={
        "without the square roots (r b + (1 - r) rho: each frame's variance is then r^2 + (1 - r)^2, not 1)":
            r * base + (1 - r) * residual,
        "with the base drawn before the residuals (the same distribution, but not the numbers this seed gives "
        "in the pipeline: draw the residuals first)": r ** 0.5 * base_first + (1 - r) ** 0.5 * residual_after,
        "with r and 1 - r swapped (the shared part should weigh sqrt(r))": (1 - r) ** 0.5 * base + r ** 0.5 * residual,
    })


def correlation_between_frames(noise):
    """noise (B, C, F, h, w) -> (F, F): the correlation between the values of frame f and of frame g."""
    frames = noise.shape[2]
    per_frame = noise.movedim(2, 0).reshape(frames, -1)  # (F, B*C*h*w): one row per frame
    return torch.corrcoef(per_frame)


def check_correlation(fn):
    g = generator(9)
    noise = 3 * video_noise((4, 2, 5, 6, 6), g, "cpu", torch.float32, 0.5)  # std 3: a covariance would be 9x
    per_frame = noise.movedim(2, 0).reshape(5, -1)
    centred = per_frame - per_frame.mean(1, keepdim=True)
    compare(call(fn, noise), frame_correlation(noise), "correlation_between_frames(noise)", mistakes={
        "with the covariance instead of the correlation (divide by the two frames' standard deviations)":
            centred @ centred.T / (centred.shape[1] - 1),
        "reshaping (B, C, F, h, w) to (F, -1) without moving the frame axis first (each row then mixes frames)":
            torch.corrcoef(noise.reshape(5, -1)),
    })


register(Exercise("08.decomposed_noise", "VideoFusion's shared + residual noise", "decomposed_noise",
                  check_decomposed_noise, decomposed_noise,
                  hint="torch.randn(shape) for the residuals first, then torch.randn((B, C, 1, h, w)) for the base; "
                       "broadcasting shares the base over the frames"))
register(Exercise("08.correlation", "the correlation between frames", "correlation_between_frames",
                  check_correlation, correlation_between_frames,
                  hint="move the frame axis first (movedim(2, 0)), flatten the rest, then torch.corrcoef"))
