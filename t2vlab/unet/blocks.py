"""One resolution level of the 3D UNet, going down, in the middle, and coming up.

Every layer of a level is the same four steps (the last two only in "CrossAttn" levels):

    ResnetBlock2D (per frame, + time) -> TemporalConvLayer -> SpatialTransformer (+ text)
                                                           -> TemporalTransformer

Going down, each layer's output is kept for the skip connection and a stride-2 convolution ends
the level. Coming up, each layer first concatenates one kept output along the channels, and an
upsampling ends the level. The names (resnets, temp_convs, attentions, temp_attentions,
downsamplers, upsamplers) are the checkpoint's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..resnet import Downsample2D, ResnetBlock2D, Upsample2D
from ..techniques.freeu import apply_freeu
from .spatial import SpatialTransformer
from .temporal import TemporalConvLayer, TemporalTransformer


class Level(nn.Module):
    """The shared body of every block: ``len(resnets)`` layers of resnet + temporal conv
    (+ spatial and temporal transformer when ``cross_attention``)."""

    def __init__(self, in_channels, out_channels, num_layers, temb_channels, cfg, cross_attention, skip_channels=()):
        super().__init__()
        groups, eps, head_dim = cfg.norm_num_groups, cfg.norm_eps, cfg.attention_head_dim
        heads = out_channels // head_dim
        self.resnets = nn.ModuleList(
            ResnetBlock2D((in_channels if i == 0 else out_channels) + (skip_channels[i] if skip_channels else 0),
                          out_channels, temb_channels, groups=groups, eps=eps)
            for i in range(num_layers))
        self.temp_convs = nn.ModuleList(TemporalConvLayer(out_channels, groups) for _ in range(num_layers))
        self.has_cross_attention = cross_attention
        if cross_attention:
            self.attentions = nn.ModuleList(
                SpatialTransformer(out_channels, heads, head_dim, cfg.cross_attention_dim, groups)
                for _ in range(num_layers))
            self.temp_attentions = nn.ModuleList(
                TemporalTransformer(out_channels, heads, head_dim, groups) for _ in range(num_layers))

    def layer(self, i, x, temb, context, num_frames):
        x = self.resnets[i](x, temb)
        x = self.temp_convs[i](x, num_frames)
        if self.has_cross_attention:
            x = self.attentions[i](x, context)
            x = self.temp_attentions[i](x, num_frames)
        return x


class DownBlock3D(Level):
    """Layers whose outputs are kept for the skips, then (except at the bottom) a stride-2 conv."""

    def __init__(self, in_channels, out_channels, temb_channels, cfg, add_downsample, cross_attention=False):
        super().__init__(in_channels, out_channels, cfg.layers_per_block, temb_channels, cfg, cross_attention)
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=cfg.downsample_padding)]) \
            if add_downsample else None

    def forward(self, x, temb, context, num_frames):
        skips = []
        for i in range(len(self.resnets)):
            x = self.layer(i, x, temb, context, num_frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class CrossAttnDownBlock3D(DownBlock3D):
    def __init__(self, in_channels, out_channels, temb_channels, cfg, add_downsample):
        super().__init__(in_channels, out_channels, temb_channels, cfg, add_downsample, cross_attention=True)


class UNetMidBlock3DCrossAttn(nn.Module):
    """resnet -> temporal conv -> spatial transformer -> temporal transformer -> resnet -> temporal conv."""

    def __init__(self, channels, temb_channels, cfg):
        super().__init__()
        groups, head_dim = cfg.norm_num_groups, cfg.attention_head_dim
        self.resnets = nn.ModuleList(
            ResnetBlock2D(channels, channels, temb_channels, groups=groups, eps=cfg.norm_eps,
                          output_scale_factor=cfg.mid_block_scale_factor) for _ in range(2))
        self.temp_convs = nn.ModuleList(TemporalConvLayer(channels, groups) for _ in range(2))
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, channels // head_dim, head_dim, cfg.cross_attention_dim, groups)])
        self.temp_attentions = nn.ModuleList([TemporalTransformer(channels, channels // head_dim, head_dim, groups)])

    def forward(self, x, temb, context, num_frames):
        x = self.temp_convs[0](self.resnets[0](x, temb), num_frames)
        x = self.attentions[0](x, context)
        x = self.temp_attentions[0](x, num_frames)
        return self.temp_convs[1](self.resnets[1](x, temb), num_frames)


class UpBlock3D(Level):
    """Layers that each first concatenate one skip (last kept, first used), then a 2x upsampling.

    ``freeu``: None (plain), or a ``FreeUScale`` that re-weighs backbone and skip before each
    concatenation (the hook point of ``t2vlab.techniques.freeu``; set by ``UNet3DConditionModel.enable_freeu``)."""

    def __init__(self, in_channels, prev_channels, out_channels, temb_channels, cfg, add_upsample,
                 cross_attention=False):
        n = cfg.layers_per_block + 1
        skip_channels = [out_channels] * (n - 1) + [in_channels]
        super().__init__(prev_channels, out_channels, n, temb_channels, cfg, cross_attention, skip_channels)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None
        self.freeu = None  # hook point: FreeU's scale for this level while it is on

    def forward(self, x, skips, temb, context, num_frames, upsample_size=None):
        for i in range(len(self.resnets)):
            skip = skips[-1 - i]  # last kept, first used (read, not popped: a checkpointed level runs twice)
            if self.freeu is not None:
                x, skip = apply_freeu(x, skip, self.freeu)
            x = torch.cat([x, skip], dim=1)
            x = self.layer(i, x, temb, context, num_frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class CrossAttnUpBlock3D(UpBlock3D):
    def __init__(self, in_channels, prev_channels, out_channels, temb_channels, cfg, add_upsample):
        super().__init__(in_channels, prev_channels, out_channels, temb_channels, cfg, add_upsample,
                         cross_attention=True)


DOWN_BLOCKS = {"DownBlock3D": DownBlock3D, "CrossAttnDownBlock3D": CrossAttnDownBlock3D}
UP_BLOCKS = {"UpBlock3D": UpBlock3D, "CrossAttnUpBlock3D": CrossAttnUpBlock3D}
