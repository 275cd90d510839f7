"""Loops: a video whose last frame flows into its first, by making the time axis a circle.

    pipe("a red circle moving right", loop=True)

In the video UNet only two kinds of layer look across frames (``t2vlab.unet.temporal``):

- the temporal convolutions (``TemporalConvLayer``: four Conv3d with 3x1x1 kernels along time) pad the time axis
  with zeros, so frame 0 sees an empty "frame -1" and frame F-1 an empty "frame F". With the loop on they pad
  circularly: frame 0's previous frame is frame F-1 and frame F-1's next is frame 0,

      h[f] = W_-1 x[(f - 1) mod F] + W_0 x[f] + W_+1 x[(f + 1) mod F] + b          (each of the four convolutions)

- the temporal attention (``TemporalTransformer`` and the UNet's ``transformer_in``: the F frames at one pixel are
  F tokens) needs no change, and does nothing special at the edges: it has no position embedding and no mask
  (``TransformerBlock``'s two self-attentions and its feed-forward, ``Attention`` in ``t2vlab.attention``), and its
  GroupNorm takes its statistics over all frames, so every frame attends to every other by content alone, frame 0
  to frame F-1 as much as to frame 1. It is equivariant to any reordering of the frames, cyclic shifts included.

Every other layer sees each frame on its own. So with circular convolutions the whole network commutes with a
cyclic shift of the frames (``tests/test_loops.py`` holds it to that): no frame is the first or the last, and the
sampler, which treats frames alike too, draws a video on a circle. Without the loop, the zero padding is the only
thing in the network that tells the two ends of a video apart.

FreeNoise's windows (``techniques.free_noise``) do not wrap around the circle: with them the attention would again
know where the video starts, so ``loop=True`` with FreeNoise on is refused (``guards``).

Where it plugs in: the network's hook point is ``TemporalConvLayer.circular`` (False: the layer's own zero-padded
convolutions, the plain numbers bit for bit); ``unet.enable_loop()`` / ``disable_loop()`` set it on every layer
(``set_loop``), and ``pipe(..., loop=True)`` holds it on for the call (``looping``).
"""

from __future__ import annotations

import contextlib

import torch.nn.functional as F


def pad_time_circular(video, frames=1):
    """(B, C, F, H, W) -> (B, C, F + 2 * frames, H, W): the last ``frames`` frames before the first, the first
    ``frames`` after the last."""
    return F.pad(video, (0, 0, 0, 0, frames, frames), mode="circular")


def circular_convolutions(layer, video):
    """A ``TemporalConvLayer``'s four (GroupNorm, SiLU[, Dropout], Conv3d 3x1x1) on a circular time axis:
    (B, C, F, H, W) -> the layer's update h (same shape), before the residual."""
    h = video
    for block in (layer.conv1, layer.conv2, layer.conv3, layer.conv4):
        *pre, conv = block
        for module in pre:
            h = module(h)
        h = F.conv3d(pad_time_circular(h, conv.kernel_size[0] // 2), conv.weight, conv.bias)
    return h


def set_loop(unet, on: bool):
    """Put the switch on the network's hook point: every module with a ``circular`` attribute (the temporal
    convolution layers)."""
    for module in unet.modules():
        if hasattr(module, "circular"):
            module.circular = bool(on)


def loop_enabled(unet) -> bool:
    return any(getattr(module, "circular", False) for module in unet.modules())


@contextlib.contextmanager
def looping(unet, on: bool):
    """The time axis a circle for the duration (``on``), then as it was; with ``on`` False, nothing changes."""
    if not on:
        yield
        return
    before = loop_enabled(unet)
    set_loop(unet, True)
    try:
        yield
    finally:
        set_loop(unet, before)
