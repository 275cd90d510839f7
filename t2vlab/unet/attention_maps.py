"""Reading the UNet's attention maps: which prompt tokens each pixel looks at, which frames each frame
looks at.

    with capture_attention(unet) as maps:
        unet(latents, t, text)
    maps.cross[k]      # (B*F, heads, h_k*w_k, L)  k-th spatial transformer's cross-attention to the text
    maps.temporal[k]   # (B*h_k*w_k, heads, F, F)  k-th temporal transformer's attention across frames

While the block is open, the recorded attention modules compute the formula written out
(``Attention.keep_probs``) and keep their softmax; on leaving, they go back to the fused kernel and
the modules keep nothing (the ``AttentionMaps`` object holds the maps).
"""

from __future__ import annotations

import contextlib
import dataclasses

from .spatial import SpatialTransformer
from .temporal import TemporalTransformer


@dataclasses.dataclass
class AttentionMaps:
    """The maps of the last UNet call made inside ``capture_attention``, in network order; filled as
    each layer runs. ``cross_sizes[k]`` / ``temporal_sizes[k]``: the (h, w) of the feature map there."""

    cross: list
    cross_sizes: list
    temporal: list
    temporal_sizes: list


def attention_layers(unet):
    """(cross-attention, temporal self-attention) modules of the UNet, each paired with its transformer."""
    cross, temporal = [], []
    for module in unet.modules():
        if isinstance(module, SpatialTransformer):
            cross += [(module, block.attn2) for block in module.transformer_blocks]
        elif isinstance(module, TemporalTransformer):
            temporal += [(module, block.attn1) for block in module.transformer_blocks]
    return cross, temporal


@contextlib.contextmanager
def capture_attention(unet):
    """Record every cross-attention and temporal attention map of the UNet calls made inside the block."""
    cross, temporal = attention_layers(unet)
    maps = AttentionMaps([None] * len(cross), [None] * len(cross), [None] * len(temporal), [None] * len(temporal))

    def keeper(probs, sizes, k, attn):
        def keep(transformer, args, output):  # after the transformer ran: its attention's map, its (h, w)
            probs[k], sizes[k] = attn.last_probs, tuple(args[0].shape[-2:])
            attn.last_probs = None
        return keep

    hooks = [t.register_forward_hook(keeper(maps.cross, maps.cross_sizes, k, a)) for k, (t, a) in enumerate(cross)]
    hooks += [t.register_forward_hook(keeper(maps.temporal, maps.temporal_sizes, k, a))
              for k, (t, a) in enumerate(temporal)]
    for _, attn in cross + temporal:
        attn.keep_probs = True
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()
        for _, attn in cross + temporal:
            attn.keep_probs, attn.last_probs = False, None
