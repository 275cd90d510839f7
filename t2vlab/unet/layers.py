"""The layers a 3D UNet level is made of, besides the ResnetBlock2D of ``t2vlab.resnet``.

Shapes: inside the UNet a video batch travels as frames folded into the batch, (B*F, C, H, W).
The spatial layers see each frame on its own; the temporal layers unfold the frames again and
work along F, at each pixel.

- timestep_embedding   sinusoidal features of the diffusion step t, [cos(t w_i), sin(t w_i)]
- TimestepEmbedding    Linear -> SiLU -> Linear on those features
- TemporalConvLayer    four (GroupNorm, SiLU, Conv3d with a 3x1x1 kernel) along time, residual;
                       its last convolution starts at zero, so a new layer begins as the identity
- TransformerBlock     x + SelfAttn(LN x); x + CrossAttn(LN x, text); x + FeedForward(LN x)
- SpatialTransformer   GroupNorm -> Linear -> TransformerBlock over the H*W tokens of each frame
                       -> Linear, residual. Cross-attention reads the text.
- TemporalTransformer  the same, but the tokens of a sequence are the F frames at one pixel; both
                       attentions of its block are self-attention (no text).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import Attention, FeedForward


def timestep_embedding(t, dim, max_period=10000):
    """(N,) timesteps -> (N, dim) features [cos(t w_0..w_{d/2-1}), sin(...)], w_i = max_period^(-2i/dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t[:, None].float() * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


def _temporal_conv(channels, groups):
    return nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(), nn.Dropout(0.1),
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
        video = x.unflatten(0, (-1, num_frames)).transpose(1, 2)  # (B, C, F, H, W)
        h = self.conv4(self.conv3(self.conv2(self.conv1(video))))
        return (video + h).transpose(1, 2).flatten(0, 1)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, then attention to ``context`` (or self again), then GEGLU."""

    def __init__(self, dim, heads, dim_head, cross_attention_dim=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x, context=None):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Attention among the H*W positions of each frame, and from each position to the prompt."""

    def __init__(self, channels, heads, dim_head, cross_attention_dim, groups=32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head, cross_attention_dim)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, context):
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # (B*F, H*W, inner)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return x + self.proj_out(tokens).transpose(1, 2).reshape(n, c, h, w)


class TemporalTransformer(nn.Module):
    """Attention among the F frames at each pixel (a sequence of F tokens per pixel)."""

    def __init__(self, channels, heads, dim_head, groups=32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x, num_frames):
        bf, c, h, w = x.shape
        video = x.unflatten(0, (-1, num_frames)).transpose(1, 2)  # (B, C, F, H, W)
        tokens = self.norm(video).permute(0, 3, 4, 2, 1).reshape(-1, num_frames, c)  # (B*H*W, F, C)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        out = self.proj_out(tokens).reshape(-1, h, w, num_frames, c).permute(0, 3, 4, 1, 2)  # (B, F, C, H, W)
        return x + out.reshape(bf, c, h, w)
