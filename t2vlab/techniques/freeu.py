"""FreeU (Si et al., 2023, "FreeU: Free Lunch in Diffusion U-Net"): re-weigh what the decoder reads.

Coming up, each layer of an up level concatenates two things along the channels: the backbone
(the output of the layer below) and a skip (kept going down). The backbone carries the denoising;
the skips carry high-frequency detail, and the paper finds they can drown the backbone out. FreeU,
at the two lowest-resolution up levels only, before each concatenation:

    backbone[:, :C/2] *= b            amplify half of the backbone's channels
    skip = fourier_filter(skip, s)    scale the lowest spatial frequencies of the skip by s

Level 0 (the lowest resolution) uses (b1, s1), level 1 uses (b2, s2); the other levels and every
weight are untouched. No training, no new parameters; switched off, nothing of it runs.

Where it plugs in: the hook point of the network is each up level's ``freeu`` attribute (None, or its
``FreeUScale``), read before each concatenation (``unet/blocks.py``); ``unet.enable_freeu(...)`` sets it
with ``set_freeu``.

The formulas are those of diffusers' ``apply_freeu`` (so the numbers equal its
``UNet3DConditionModel.enable_freeu``). One difference: diffusers switches FreeU off when any of the
four factors is 0 (it tests them for truth); here a 0 means what it says.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks


@dataclass(frozen=True)
class FreeUScale:
    """What one up level does to its inputs: ``backbone`` (b) multiplies half the backbone's channels,
    ``skip`` (s) the skip's lowest frequencies."""

    backbone: float
    skip: float


def check_freeu_factors(**factors):
    """Each factor a finite number >= 0 (ValueError naming the first that is not)."""
    for name, v in factors.items():
        checks.number(name, v, low=0)


def freeu_scales(s1, s2, b1, b2) -> list[FreeUScale]:
    """The per-level settings, lowest resolution first: [(b1, s1), (b2, s2)]."""
    check_freeu_factors(s1=s1, s2=s2, b1=b1, b2=b2)
    return [FreeUScale(float(b1), float(s1)), FreeUScale(float(b2), float(s2))]


def fourier_filter(x, scale, threshold=1):
    """Scale the lowest spatial frequencies of each (H, W) map of x (N, C, H, W) by ``scale``.

    FFT over (H, W), shifted so the zero frequency sits at (H//2, W//2); the square of half-width
    ``threshold`` around it (2x2 frequencies for threshold 1) is multiplied by ``scale``; inverse FFT,
    real part. In float32 (the FFT of half precision is experimental), cast back at the end.
    """
    h, w = x.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones(h, w, device=x.device)
    ch, cw = h // 2, w // 2
    # (max(., 0): a 1-pixel map has its zero frequency at 0, and the square is clipped there)
    mask[max(ch - threshold, 0):ch + threshold, max(cw - threshold, 0):cw + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


def apply_freeu(backbone, skip, scale: FreeUScale):
    """(backbone, skip) as FreeU hands them to the concatenation of an up level's layer."""
    half = backbone.shape[1] // 2
    backbone = torch.cat([backbone[:, :half] * scale.backbone, backbone[:, half:]], dim=1)
    return backbone, fourier_filter(skip, scale.skip)


def set_freeu(unet, scales):
    """Put ``scales`` (``freeu_scales(...)``: lowest resolution first) on the network's hook point, the up
    levels' ``freeu``; None switches FreeU off (every level's ``freeu`` is None: the plain network)."""
    for i, block in enumerate(unet.up_blocks):
        block.freeu = scales[i] if scales is not None and i < len(scales) else None
