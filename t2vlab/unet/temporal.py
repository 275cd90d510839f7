"""The temporal layers: what makes the image UNet a video UNet.

Inside the UNet a video travels with its frames folded into the batch, (B*F, C, H, W) (see
``t2vlab.frames``). Every other layer sees each frame on its own; these two unfold the frames and
work along F, at each pixel:

- TemporalConvLayer    four (GroupNorm, SiLU, Conv3d with a 3x1x1 kernel) along time, residual;
                       its last convolution starts at zero, so a new layer begins as the identity
- TemporalTransformer  a transformer whose tokens are the F frames at one pixel: self-attention
                       across time (both attentions of its block are self-attention; no text)

The hook point of FreeNoise (``t2vlab.techniques.free_noise``): ``TemporalTransformer.windows``; when
set, the attention runs within its windows of frames (``attend_in_windows``). The hook point of loops
(``t2vlab.techniques.loops``): ``TemporalConvLayer.circular``; when True, the convolutions pad the time
axis circularly (``circular_convolutions``), so the last frame is the first one's neighbour.
"""

from __future__ import annotations

from torch import nn

from ..frames import batch_to_frames, frames_to_batch
from ..techniques.free_noise import attend_in_windows
from ..techniques.loops import circular_convolutions
from .spatial import TransformerBlock


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
        self.circular = False  # hook point: a loop's circular time axis (t2vlab.techniques.loops)

    def forward(self, x, num_frames):
        video = batch_to_frames(x, num_frames)  # (B, C, F, H, W)
        if self.circular:  # loops: frame F-1 pads frame 0's past and frame 0 pads frame F-1's future
            h = circular_convolutions(self, video)
        else:  # zero padding: the ends of the video see nothing beyond them
            h = self.conv4(self.conv3(self.conv2(self.conv1(video))))
        return frames_to_batch(video + h)


class TemporalTransformer(nn.Module):
    """Attention among the F frames at each pixel (a sequence of F tokens per pixel).

    ``windows``: None (all frames attend to all), or FreeNoise's settings (the hook point of
    ``t2vlab.techniques.free_noise``; set by ``UNet3DConditionModel.enable_free_noise``)."""

    def __init__(self, channels, heads, dim_head, groups=32):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, dim_head)])
        self.proj_out = nn.Linear(inner, channels)
        self.windows = None  # hook point: FreeNoise's settings while it is on

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
