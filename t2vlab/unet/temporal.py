"""The temporal layers: what makes the image UNet a video UNet.

Inside the UNet a video travels with its frames folded into the batch, (B*F, C, H, W) (see
``t2vlab.frames``). Every other layer sees each frame on its own; these two unfold the frames and
work along F, at each pixel:

- TemporalConvLayer    four (GroupNorm, SiLU, Conv3d with a 3x1x1 kernel) along time, residual;
                       its last convolution starts at zero, so a new layer begins as the identity
- TemporalTransformer  a transformer whose tokens are the F frames at one pixel: self-attention
                       across time (both attentions of its block are self-attention; no text)

Windowed temporal attention (FreeNoise, Qiu et al., 2023): the model was trained on clips of a few
frames; at many more, each frame's attention spreads thin over all of them. With ``windows`` set
(``ContextWindows``), a TemporalTransformer runs its attention within overlapping windows of
``context_length`` frames, ``context_stride`` apart, and averages each frame's results over the
windows that hold it with the chosen weights; the feed-forward (per frame) and the temporal
convolutions still see every frame. At most ``context_length`` frames it is the plain layer.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn

from ..frames import batch_to_frames, frames_to_batch
from .spatial import TransformerBlock

WEIGHTING_SCHEMES = ("flat", "pyramid", "delayed_reverse_sawtooth")


def _temporal_conv(channels, groups, dropout=0.1):
    return nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(dropout),
                         nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))


class TemporalConvLayer(nn.Module):
    """(B*F, C, H, W) -> same shape; four convolutions along the frame axis, added to the input."""

    def __init__(self, channels, groups=32):
        super().__init__()
        self.conv1 = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                   nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
        self.conv2 = _temporal_conv(channels, groups)
        self.conv3 = _temporal_conv(channels, groups)
        self.conv4 = _temporal_conv(channels, groups)
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x, num_frames):
        video = batch_to_frames(x, num_frames)  # (B, C, F, H, W)
        h = self.conv4(self.conv3(self.conv2(self.conv1(video))))
        return frames_to_batch(video + h)


# ------------------------------------------------------------------------- windows (FreeNoise)
def window_weights(length, scheme="pyramid") -> list[float]:
    """How much each position of a window counts when overlapping windows are averaged.

    flat [1, 1, 1, 1, 1]; pyramid [1, 2, 3, 2, 1] (even: [1, 2, 2, 1]); delayed_reverse_sawtooth
    [0.01, 0.01, 3, 2, 1] (even: [0.01, 2, 2, 1]): a window's first frames barely count.
    """
    if scheme == "flat":
        return [1.0] * length
    if scheme == "pyramid":
        return [float(min(i + 1, length - i)) for i in range(length)]
    if scheme == "delayed_reverse_sawtooth":
        half = (length + 1) // 2
        ramp = list(range(half, 0, -1))
        if length % 2 == 0:
            ramp = [half] + ramp
        return [0.01] * (length - len(ramp)) + [float(w) for w in ramp]
    raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {scheme!r}")


def _check_size(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


@dataclass(frozen=True)
class ContextWindows:
    """Overlapping windows of ``context_length`` frames, ``context_stride`` apart, averaged with the
    weights of ``weighting_scheme``. ``context_stride`` must be at most ``context_length`` (so every
    frame is in some window)."""

    context_length: int = 16
    context_stride: int = 4
    weighting_scheme: str = "pyramid"

    def __post_init__(self):
        _check_size("context_length", self.context_length)
        _check_size("context_stride", self.context_stride)
        if self.context_stride > self.context_length:
            raise ValueError(f"context_stride ({self.context_stride}) must be at most context_length "
                             f"({self.context_length}), else frames between windows are left out")
        if not isinstance(self.weighting_scheme, str) or self.weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {self.weighting_scheme!r}")

    def spans(self, num_frames) -> list[tuple[int, int]]:
        """[(start, end)] of the windows over ``num_frames`` frames: every ``context_stride`` frames a
        window of ``context_length``, and one more ending at the last frame if they miss it.
        E.g. 24 frames, length 16, stride 4: (0, 16), (4, 20), (8, 24)."""
        length = min(self.context_length, num_frames)
        spans = [(s, s + length) for s in range(0, num_frames - length + 1, self.context_stride)]
        if spans[-1][1] < num_frames:
            spans.append((num_frames - length, num_frames))
        return spans


def attend_in_windows(block, tokens, windows: ContextWindows):
    """``block``'s attention sublayers within each window of frames, fused; then its feed-forward.

    tokens (N, F, C) -> (N, F, C): for each frame, the weighted mean of what the windows holding it
    gave it. One window's attention exists at a time, so memory grows with F, not F^2.
    """
    frames = tokens.shape[1]
    weights = torch.tensor(window_weights(windows.context_length, windows.weighting_scheme),
                           dtype=tokens.dtype, device=tokens.device)
    total = torch.zeros_like(tokens)
    weight_sum = torch.zeros(frames, dtype=tokens.dtype, device=tokens.device)
    for start, end in windows.spans(frames):
        total[:, start:end] += block.attend(tokens[:, start:end]) * weights[:, None]
        weight_sum[start:end] += weights
    return block.feed_forward(total / weight_sum[:, None])


class TemporalTransformer(nn.Module):
    """Attention among the F frames at each pixel (a sequence of F tokens per pixel).

    ``windows``: None (all frames attend to all), or ``ContextWindows`` (FreeNoise; set by
    ``UNet3DConditionModel.enable_free_noise``)."""

    def __init__(self, channels, heads, dim_head, groups=32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head)])
        self.proj_out = nn.Linear(inner, channels)
        self.windows = None

    def forward(self, x, num_frames):
        bf, c, h, w = x.shape
        video = batch_to_frames(x, num_frames)  # (B, C, F, H, W)
        tokens = self.norm(video).permute(0, 3, 4, 2, 1).reshape(-1, num_frames, c)  # (B*H*W, F, C)
        tokens = self.proj_in(tokens)
        windowed = self.windows is not None and num_frames > self.windows.context_length
        for block in self.transformer_blocks:
            tokens = attend_in_windows(block, tokens, self.windows) if windowed else block(tokens)
        out = self.proj_out(tokens).reshape(-1, h, w, num_frames, c).permute(0, 3, 4, 1, 2)  # (B, F, C, H, W)
        return x + out.reshape(bf, c, h, w)
