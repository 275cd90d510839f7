"""Convolutional building blocks shared by the UNet and the VAE.

ResnetBlock2D:   x -> GroupNorm -> SiLU -> Conv3x3 (+ time embedding) -> GroupNorm -> SiLU -> Conv3x3,
                 added to x (through a 1x1 conv when the channel count changes).
Downsample2D:    a stride-2 3x3 convolution (halves H and W).
Upsample2D:      nearest-neighbour 2x upsampling, then a 3x3 convolution.

They work on image batches (N, C, H, W); the UNet folds video frames into N.
Parameter names (norm1, conv1, time_emb_proj, ...) are those of the published checkpoint.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class ResnetBlock2D(nn.Module):
    def __init__(self, in_channels, out_channels=None, temb_channels=None, groups=32, eps=1e-6,
                 output_scale_factor=1.0, dropout=0.0):
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x, temb=None):
        # one step per line, rebinding h: each activation is freed as soon as the next exists
        # (a nested call would keep conv1's output alive through the whole second half)
        h = self.norm1(x)
        h = F.silu(h)
        h = self.conv1(h)
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.norm2(h)
        h = F.silu(h)
        h = self.dropout(h)
        h = self.conv2(h)
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        h = skip + h
        return h if self.output_scale_factor == 1 else h / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 convolution. ``padding=0`` pads right and bottom by one first (the VAE's way)."""

    def __init__(self, channels, out_channels=None, padding=1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest 2x (or to ``output_size``, for odd sizes) then a 3x3 convolution."""

    def __init__(self, channels, out_channels=None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x, output_size=None):
        if x.shape[0] >= 64:  # nearest upsampling of a large channels-last batch needs contiguous input
            x = x.contiguous()
        if output_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=output_size, mode="nearest")
        return self.conv(x)
