"""Notebook 05's exercises: folding frames into the batch, the sinusoidal timestep embedding, one level's forward."""

from __future__ import annotations

import torch

from ..frames import frames_to_batch
from ..unet.blocks import CrossAttnDownBlock3D
from ..unet.model import UNetConfig
from ..unet.model import timestep_embedding as package_timestep_embedding
from .core import Exercise, ExerciseMistake, call, compare, generator, register


# ------------------------------------------------------------------------ 05.fold: frames into the batch
def fold(video):
    """(B, C, F, H, W) -> (B*F, C, H, W), frame index fastest: video 0's frames 0..F-1, then video 1's."""
    B, C, F_, H, W = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(B * F_, C, H, W)  # (B, F, C, H, W), then B and F merged


def check_fold(fn):
    video = torch.randn(2, 3, 4, 5, 6, generator=generator(0))  # B, C, F, H, W all different
    B, C, F_, H, W = video.shape
    # a reshape moves values without arithmetic: the result must be exactly equal (any tolerance would do)
    compare(call(fn, video), frames_to_batch(video), "fold(video)", mistakes={
        "with a plain reshape(B*F, C, H, W): the right shape, but each 'frame' is cut from the channels and "
        "frames of the video in memory order": video.reshape(B * F_, C, H, W),
        "with the video index fastest (every video's frame 0 first, then frame 1...), not the frame index":
            video.permute(2, 0, 1, 3, 4).reshape(F_ * B, C, H, W),
    }, rtol=0, atol=0)


register(Exercise("05.fold", "fold the frames into the batch", "fold", check_fold, fold,
                  hint="bring F next to B (permute to (B, F, C, H, W)), then merge the two with reshape"))


# ---------------------------------------------------------- 05.timestep_embedding: t as sines and cosines
def timestep_embedding(t, dim):
    """(N,) timesteps -> (N, dim): [cos(t w_0), ..., cos(t w_{h-1}), sin(t w_0), ..., sin(t w_{h-1})], h = dim // 2,
    frequencies w_i = 10000^(-i / h) from 1 down to (almost) 1/10000 (dim even)."""
    half = dim // 2
    freqs = 10000 ** (-torch.arange(half, dtype=torch.float32) / half)    # (h,): geometric, 1 ... 1e-4
    angles = t.float()[:, None] * freqs[None, :]                          # (N, h)
    return torch.cat([angles.cos(), angles.sin()], dim=-1)                # cos half first, as this model has it


def check_timestep_embedding(fn):
    t, dim = torch.tensor([0, 1, 10, 250, 500, 999]), 32
    half = dim // 2
    freqs = 10000 ** (-torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs
    # cos/sin of angles up to 999 rad in float32: the argument itself is rounded by ~6e-5, so values agree
    # to about 1e-4; atol 2e-4 allows that and still tells every mistake below apart (they differ by O(1))
    compare(call(fn, t, dim), package_timestep_embedding(t, dim), "timestep_embedding(t, 32)", mistakes={
        "with the sin half first: this model (like ModelScope's, flip_sin_to_cos=True) puts the cos half first":
            torch.cat([angles.sin(), angles.cos()], -1),
        "with the frequencies 10000^(-i / (h - 1)) (diffusers' downscale_freq_shift=1); this model divides by h":
            torch.cat([(t.float()[:, None] * 10000 ** (-torch.arange(half) / (half - 1))).cos(),
                       (t.float()[:, None] * 10000 ** (-torch.arange(half) / (half - 1))).sin()], -1),
        "with linear frequencies i / h where geometric ones belong":
            torch.cat([(t.float()[:, None] * torch.arange(half) / half).cos(),
                       (t.float()[:, None] * torch.arange(half) / half).sin()], -1),
        "with cos and sin interleaved (cos, sin, cos, sin...), not one half each":
            torch.stack([angles.cos(), angles.sin()], -1).flatten(1),
    }, rtol=0, atol=2e-4)


register(Exercise("05.timestep_embedding", "the sinusoidal timestep embedding", "timestep_embedding",
                  check_timestep_embedding, timestep_embedding,
                  hint="w_i = 10000 ** (-i / half) for i < half; angles = t[:, None] * w; cat([cos, sin], -1)"))


# --------------------------------------------------------------------- 05.level: one level's forward pass
def down_level(level, x, temb, context, num_frames):
    """One level of the UNet on the way down (a CrossAttnDownBlock3D): each of its layers runs resnet (per frame, with
    the time embedding) -> temporal conv -> spatial transformer (with the text) -> temporal transformer, and its output
    is kept for a skip; then the downsampler halves H and W, and its output is kept too.

    x (B*F, C, H, W) frames folded into the batch; temb (B*F, T); context (B, L, D) -> (x, list of skips)."""
    skips = []
    for resnet, temp_conv, spatial, temporal in zip(level.resnets, level.temp_convs, level.attentions,
                                                    level.temp_attentions):
        x = resnet(x, temb)                   # each frame as its own image, the step t added in
        x = temp_conv(x, num_frames)          # along time, at every pixel
        x = spatial(x, context)               # within a frame, then reading the text
        x = temporal(x, num_frames)           # across frames, at every pixel
        skips.append(x)
    x = level.downsamplers[0](x)              # stride-2 convolution: H, W halved
    skips.append(x)
    return x, skips


def _level():
    """A small CrossAttnDownBlock3D with 2 layers; its zero-initialised weights (the temporal convolution's last
    layer) made non-zero, so that a step left out changes the result."""
    cfg = UNetConfig(block_out_channels=(16, 32, 32, 32), layers_per_block=2, norm_num_groups=4, attention_head_dim=8,
                     cross_attention_dim=12)
    torch.manual_seed(0)  # the modules' initial weights come from the global generator
    level = CrossAttnDownBlock3D(16, 16, 64, cfg, add_downsample=True).eval()
    g = generator(9)
    with torch.no_grad():
        for p in level.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return level


def check_level(fn):
    level, B, F_ = _level(), 1, 4
    g = generator(8)
    x = torch.randn(B * F_, 16, 8, 8, generator=g)
    temb, context = torch.randn(B * F_, 64, generator=g), torch.randn(B, 5, 12, generator=g)
    with torch.no_grad():
        want, want_skips = level(x, temb, context, F_)
        got = call(fn, level, x, temb, context, F_)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseMistake("down_level should return two things: (x, skips)")
        got_x, got_skips = got

        def layers(order):  # every layer run with the steps in ``order`` (a list of (module list, how to call))
            h, kept = x, []
            for i in range(len(level.resnets)):
                for step in order:
                    h = step(i, h)
                kept.append(h)
            return h, kept

        resnet = lambda i, h: level.resnets[i](h, temb)  # noqa: E731
        conv = lambda i, h: level.temp_convs[i](h, F_)  # noqa: E731
        spatial = lambda i, h: level.attentions[i](h, context)  # noqa: E731
        temporal = lambda i, h: level.temp_attentions[i](h, F_)  # noqa: E731
        no_conv, _ = layers([resnet, spatial, temporal])
        swapped, _ = layers([resnet, conv, temporal, spatial])
        no_temporal, _ = layers([resnet, conv, spatial])
        down = level.downsamplers[0]
        # float32 rounding of the same layers called in the same order: compare's default tolerances
        compare(got_x, want, "the level's output x", mistakes={
            "without the temporal convolution (each frame's features never mix with its neighbours' before "
            "attention)": down(no_conv),
            "with the temporal transformer before the spatial one": down(swapped),
            "without the temporal transformer": down(no_temporal),
            "without the downsampler at the end (H and W not halved)": layers([resnet, conv, spatial, temporal])[0],
        })
        if not isinstance(got_skips, (list, tuple)) or len(got_skips) != len(want_skips):
            n = len(got_skips) if isinstance(got_skips, (list, tuple)) else type(got_skips).__name__
            raise ExerciseMistake(f"skips should be a list of {len(want_skips)} tensors (one per layer, then the "
                                  f"downsampled x), got {n}")
        for i, (s, w) in enumerate(zip(got_skips, want_skips)):
            last = i == len(want_skips) - 1
            compare(s, w, f"skip {i} ({'the downsampled x' if last else f'the output of layer {i}'})", mistakes={
                "keeping each layer's input instead of its output": x if i == 0 else want_skips[i - 1],
            })


register(Exercise("05.level", "one level's forward: four layers, skips, downsample", "down_level", check_level,
                  down_level, hint="for each i: resnets[i](x, temb), temp_convs[i](x, F), attentions[i](x, context), "
                                   "temp_attentions[i](x, F), keep x; then downsamplers[0](x), keep it too"))
