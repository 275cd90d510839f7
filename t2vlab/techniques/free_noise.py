"""FreeNoise (Qiu et al., 2023, "FreeNoise: Tuning-Free Longer Video Diffusion via Noise Rescheduling").

The model was trained on clips of ``context_length`` frames (16 for ms-1.7b, 8 for the toy). Asked for
many more, two things go wrong: every frame's noise is independent, so distant frames have nothing in
common to start from; and each temporal attention spreads its weights over far more frames than it ever
saw, so each frame reads a thin average of all of them. FreeNoise fixes both, without training:

1. noise rescheduling (``reschedule_noise``, the paper's Sec. 3.2): the noise of frame f >= L (L =
   ``context_length``) is a shuffled copy of the noise L frames earlier, ``context_stride`` frames at a
   time, so every frame starts from one of the first window's noises and the video starts correlated;
2. window-based attention fusion (``attend_in_windows``, Sec. 3.3, Eq. 4): each temporal attention runs
   within overlapping windows of L frames, ``context_stride`` apart, and a frame's result is the
   weighted mean over the windows that hold it,

       out_f = sum_w  a_{w,f} * Attn(tokens[window w])_f  /  sum_w a_{w,f}

   with a_{w,f} the weight of f's position inside window w (``window_weights``: flat, pyramid, or
   delayed reverse sawtooth). The temporal convolutions, the feed-forwards and everything per frame
   still see all frames.

Where it plugs in: the hook point of the network is ``TemporalTransformer.windows`` (None, or the
``FreeNoise`` settings; ``unet.enable_free_noise(...)`` sets it on every temporal transformer), and the
pipeline reschedules its starting noise when ``pipe.free_noise`` is set (``pipe.enable_free_noise``).
With L >= the number of frames both parts do nothing, and the result is the plain one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks

WEIGHTING_SCHEMES = ("flat", "pyramid", "delayed_reverse_sawtooth")
NOISE_TYPES = ("shuffle_context", "repeat_context", "random")


@dataclass(frozen=True)
class FreeNoise:
    """The settings of ``pipe.enable_free_noise(...)``, checked once here: the windows of the temporal
    attention (``context_length`` frames, ``context_stride`` apart, fused with ``weighting_scheme``) and how
    the starting noise is rescheduled (``noise_type``). ``context_stride`` is at most ``context_length``, so
    every frame is in some window."""

    context_length: int = 16
    context_stride: int = 4
    weighting_scheme: str = "pyramid"
    noise_type: str = "shuffle_context"

    def __post_init__(self):
        checks.positive_int("context_length", self.context_length)
        checks.positive_int("context_stride", self.context_stride)
        if self.context_stride > self.context_length:
            raise ValueError(f"context_stride ({self.context_stride}) must be at most context_length "
                             f"({self.context_length}), else frames between windows are left out")
        checks.one_of("weighting_scheme", self.weighting_scheme, WEIGHTING_SCHEMES)
        checks.one_of("noise_type", self.noise_type, NOISE_TYPES)

    def spans(self, num_frames) -> list[tuple[int, int]]:
        """[(start, end)] of the windows over ``num_frames`` frames: every ``context_stride`` frames a
        window of ``context_length``, and one more ending at the last frame if they miss it.
        E.g. 24 frames, length 16, stride 4: (0, 16), (4, 20), (8, 24)."""
        length = min(self.context_length, num_frames)
        spans = [(s, s + length) for s in range(0, num_frames - length + 1, self.context_stride)]
        if spans[-1][1] < num_frames:
            spans.append((num_frames - length, num_frames))
        return spans

    def reschedule(self, noise, generator=None):
        """The starting noise (B, C, F, h, w) with later frames reusing the first window's noise."""
        return reschedule_noise(noise, self.context_length, self.context_stride, self.noise_type, generator)


# ---------------------------------------------------------------------- window-based attention fusion
def window_weights(length, scheme="pyramid") -> list[float]:
    """How much each position of a window counts when overlapping windows are averaged (a_{w,f} above).

    flat [1, 1, 1, 1, 1]; pyramid [1, 2, 3, 2, 1] (even: [1, 2, 2, 1]); delayed_reverse_sawtooth
    [0.01, 0.01, 3, 2, 1] (even: [0.01, 2, 2, 1]): a window's first frames barely count.
    """
    checks.one_of("weighting_scheme", scheme, WEIGHTING_SCHEMES)
    if scheme == "flat":
        return [1.0] * length
    if scheme == "pyramid":
        return [float(min(i + 1, length - i)) for i in range(length)]
    half = (length + 1) // 2
    ramp = list(range(half, 0, -1))
    if length % 2 == 0:
        ramp = [half] + ramp
    return [0.01] * (length - len(ramp)) + [float(w) for w in ramp]


def attend_in_windows(block, tokens, settings: FreeNoise):
    """``block``'s attention sublayers within each window of frames, fused (Eq. 4); then its feed-forward.

    tokens (N, F, C) -> (N, F, C): for each frame, the weighted mean of what the windows holding it gave
    it. One window's attention exists at a time, so memory grows with F, not F^2. ``block`` is a
    transformer block with ``attend`` (its attention sublayers, residuals included) and ``feed_forward``.
    """
    frames = tokens.shape[1]
    weights = torch.tensor(window_weights(settings.context_length, settings.weighting_scheme),
                           dtype=tokens.dtype, device=tokens.device)
    total = torch.zeros_like(tokens)
    weight_sum = torch.zeros(frames, dtype=tokens.dtype, device=tokens.device)
    for start, end in settings.spans(frames):
        total[:, start:end] += block.attend(tokens[:, start:end]) * weights[:, None]
        weight_sum[start:end] += weights
    return block.feed_forward(total / weight_sum[:, None])


def set_windows(unet, settings: FreeNoise | None):
    """Put the settings on the network's hook point: every module with a ``windows`` attribute (the temporal
    transformers, ``transformer_in`` included). None switches the windows off."""
    for module in unet.modules():
        if hasattr(module, "windows"):
            module.windows = settings


# ---------------------------------------------------------------------------------- noise rescheduling
def _perm(n, generator):
    return torch.randperm(n, generator=generator) if generator is not None else torch.randperm(n)


def reschedule_noise(noise, context_length, context_stride, noise_type="shuffle_context", generator=None):
    """FreeNoise's noise rescheduling of a video's noise (B, C, F, h, w): later frames reuse the first
    ``context_length`` frames' noise, so that distant frames start correlated.

    - "shuffle_context": frames are filled ``context_stride`` at a time; each block of new frames is the
      block ``context_length`` frames earlier, in an order drawn from ``generator`` (``randperm``, after
      the noise itself was drawn). Every frame's noise is then one of the first window's frames.
    - "repeat_context": frame f takes frame f mod ``context_length``'s noise.
    - "random": the noise as drawn.

    Each frame stays standard normal (a copy of a standard-normal frame). A list of generators (one per
    video) shuffles each video with its own. With ``context_length`` >= F nothing changes.
    """
    frames = noise.shape[2]
    checks.one_of("noise_type", noise_type, NOISE_TYPES)
    if noise_type == "random" or frames <= context_length:
        return noise
    if noise_type == "repeat_context":
        return noise[:, :, torch.arange(frames) % context_length]
    noise = noise.clone()
    generators = generator if isinstance(generator, (list, tuple)) else [generator]
    for b, g in enumerate(generators):
        videos = slice(None) if len(generators) == 1 else slice(b, b + 1)
        for start in range(context_length, frames, context_stride):
            source = start - context_length + _perm(context_stride, g).to(noise.device)
            n = min(context_stride, frames - start)
            noise[videos, :, start:start + n] = noise[videos, :, source[:n]]
    return noise
