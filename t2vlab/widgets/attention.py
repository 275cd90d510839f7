"""The attention explorer's logic: record the attention maps of one UNet call on a prompt
(``t2vlab.capture_attention``), then read a token's map over a frame and the frames' attention to each
other at one pixel."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from ..unet import capture_attention
from .figures import new_figure


@dataclasses.dataclass
class AttentionRecord:
    """Attention maps from one UNet call, averaged over heads, for the first video.

    cross[k]: (F, h_k * w_k, L), with L the tokenizer's length (77 for CLIP, 8 for the toy model): how
    much each pixel of each frame reads each prompt token, for the
    k-th cross-attention layer (resolution sizes[k]); temporal[k]: (h_k * w_k, F, F), how much each
    frame reads every frame at each pixel, for the k-th temporal transformer (temporal_sizes[k]).
    """

    prompt: str
    tokens: list          # readable text of the prompt's tokens, start and end included (padding left out)
    latent_size: tuple    # (h, w) of the latents
    frames: int
    timestep: float
    cross: list
    sizes: list
    temporal: list
    temporal_sizes: list


def record_attention(pipe, prompt, frames=8, height=None, width=None, latents=None, timestep=None, seed=0):
    """Run the UNet once on ``latents`` (noise if None) at ``timestep`` (default: the middle of the
    training schedule) with the prompt, recording every cross- and temporal attention map."""
    unet = pipe.unet
    f = pipe.vae.spatial_factor
    device, dtype = pipe.device, pipe.dtype
    if latents is None:
        height = height or unet.config.sample_size * f
        width = width or unet.config.sample_size * f
        shape = (1, unet.config.in_channels, frames, height // f, width // f)
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    elif latents.ndim == 4:
        latents = latents[None]
    timestep = pipe.scheduler.config.num_train_timesteps // 2 if timestep is None else timestep
    cond, _ = pipe.encode_prompt(prompt, device, do_classifier_free_guidance=False)
    with pipe.running(unet), torch.no_grad(), capture_attention(unet) as maps:
        unet(latents.to(device, dtype), torch.tensor(float(timestep)), cond.to(dtype))
    cross_maps = [p.float().mean(1).cpu() for p in maps.cross]          # (F, hw, L)
    temporal_maps = [p.float().mean(1).cpu() for p in maps.temporal]    # (hw, F, F)
    explained = pipe.tokenizer.explain(prompt)
    tokens = [piece.strip() or token for piece, token in zip(explained.pieces, explained.tokens)]
    return AttentionRecord(prompt, tokens, tuple(latents.shape[-2:]), latents.shape[2], float(timestep), cross_maps,
                           maps.cross_sizes, temporal_maps, maps.temporal_sizes)


def token_maps(record, frame) -> torch.Tensor:
    """(L, h, w): for every token, the share of attention each latent pixel of ``frame`` gives it,
    averaged over the cross-attention layers after upsampling each (bilinear) to the latents' size.
    At each pixel the L values sum to 1."""
    maps = []
    for probs, (h, w) in zip(record.cross, record.sizes):
        m = probs[frame].T.reshape(1, -1, h, w)  # (1, L, h, w)
        maps.append(F.interpolate(m, size=record.latent_size, mode="bilinear", align_corners=False)[0])
    return torch.stack(maps).mean(0)


def temporal_map(record, y, x) -> torch.Tensor:
    """(F, F): at latent pixel (y, x), row i is how much frame i attends to each frame, averaged over
    the temporal layers (each read at the same relative position). Rows sum to 1."""
    h, w = record.latent_size
    maps = []
    for probs, (hk, wk) in zip(record.temporal, record.temporal_sizes):
        yk, xk = min(int(y * hk / h), hk - 1), min(int(x * wk / w), wk - 1)
        maps.append(probs[yk * wk + xk])
    return torch.stack(maps).mean(0)


def attention_figure(record, token, frame, y, x):
    """Left: the token's cross-attention map over ``frame`` (pixel (y, x) marked); right: the temporal
    attention between frames at that pixel (the row of ``frame`` outlined)."""
    fig = new_figure(8.5, 3.6)
    ax_map, ax_time = fig.subplots(1, 2)
    m = token_maps(record, frame)[token]
    im = ax_map.imshow(m.numpy(), cmap="magma", interpolation="nearest")
    ax_map.plot([x], [y], "c+", markersize=12, mew=2)
    fig.colorbar(im, ax=ax_map, shrink=0.8)
    word = record.tokens[token] if token < len(record.tokens) else f"#{token}"
    ax_map.set_title(f"frame {frame}: attention to {word!r}", fontsize=10)
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    tm = temporal_map(record, y, x)
    im = ax_time.imshow(tm.numpy(), cmap="viridis", vmin=0, interpolation="nearest")
    ax_time.add_patch(_row_box(frame, record.frames))
    fig.colorbar(im, ax=ax_time, shrink=0.8)
    ax_time.set_xticks(range(record.frames))
    ax_time.set_yticks(range(record.frames))
    ax_time.set_xlabel("attends to frame")
    ax_time.set_ylabel("frame")
    ax_time.set_title(f"temporal attention at pixel ({y}, {x})", fontsize=10)
    fig.suptitle(f"{record.prompt!r} at t = {record.timestep:g}", fontsize=10)
    return fig


def _row_box(row, n):
    return Rectangle((-0.5, row - 0.5), n, 1, fill=False, edgecolor="crimson", lw=2)
