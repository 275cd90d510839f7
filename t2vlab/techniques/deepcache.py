"""DeepCache (Ma et al., 2023): reuse the UNet's deep features across neighbouring steps.

Between two neighbouring denoising steps the input changes a little, and the UNet's deep,
low-resolution features change even less; what changes is carried mostly by the skip connections of
the outer levels. So every ``cache_interval`` steps the whole UNet runs and the input of one up level
is kept; at the steps between, only the outer levels run (down, then up on the kept features):

    full step     conv_in -> down 0 .. down L-1 -> mid -> up L-1 .. up b+1 -> [keep] -> up b .. up 0 -> out
    shallow step  conv_in -> down 0 .. down b (its layers; no downsampling)  [kept] -> up b .. up 0 -> out

``cache_branch`` b is the level where the shallow path turns back: 0 runs only the outermost level
(the cheapest shallow step), larger b recompute more of the network (closer to the full result). The
paper picks a skip branch within a level; here the unit is a whole level (all its layers), which is
coarser but needs no change inside a level.

Which step is which: the calls are counted within one run of the loop; a run starts when the timestep
does not fall (a sampler's timesteps fall from noise to clean, so the first call of a new generation,
a FreeInit pass or a video-to-video run sees a timestep at least as high as the last one). A kept
feature is only used for an input of the same shape. With ``cache_interval=1`` every call is a full
one: the numbers are exactly the plain network's.

Where it plugs in: the hook point of the network is ``unet.deepcache`` (None, or this cache), which the
UNet's forward asks first; ``unet.enable_deepcache(...)`` installs it. The step rule runs in Python
between calls, so it does not combine with a compiled UNet (refused, both ways round).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from .. import checks


class DeepCache:
    """The cache and the step rule; installed by ``UNet3DConditionModel.enable_deepcache``."""

    def __init__(self, unet, cache_interval=3, cache_branch=0):
        levels = len(unet.up_blocks)
        self.interval = checks.positive_int("cache_interval", cache_interval)
        self.branch = checks.integer("cache_branch", cache_branch, low=0, high=levels - 1,
                                     hint=" (a level index of this UNet)")
        if getattr(unet, "_compiled_call_impl", None) is not None:  # nn.Module.compile's mark (t2vlab.compiled)
            raise ValueError("enable_deepcache: the UNet is compiled; DeepCache's step rule runs in Python between "
                             "calls, so call pipe.uncompile() first (or enable DeepCache instead of compiling)")
        self.feature = None  # the kept input of up level ``branch``, (B*F, C, h, w)
        self.shape = None  # the sample shape it was computed for
        self.calls, self.last_t = 0, None  # calls since this run of the loop began; the last timestep
        self.full_calls = self.shallow_calls = 0  # counts, for reports and tests
        level = unet.up_blocks[levels - 1 - self.branch]
        self.handle = level.register_forward_pre_hook(self.keep)

    def keep(self, module, args):
        """Forward pre-hook on up level ``branch``: a full call keeps what enters it."""
        self.feature = args[0].detach()

    def remove(self):
        self.handle.remove()
        self.feature = None

    def reuse(self, sample, timestep) -> bool:
        """Whether this call runs the shallow path: not the first call of a run, not a multiple of the
        interval, and a kept feature for this shape."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        self.calls = 0 if self.last_t is None or t >= self.last_t else self.calls + 1
        self.last_t = t
        shallow = self.calls % self.interval != 0 and self.feature is not None and self.shape == tuple(sample.shape)
        if shallow:
            self.shallow_calls += 1
        else:
            self.full_calls += 1
            self.shape = tuple(sample.shape)
        return shallow

    def shallow_forward(self, unet, sample, timestep, encoder_hidden_states, timestep_cond=None):
        """The outer levels 0..branch only, on the kept deep features: same inputs and output as ``unet``."""
        x, temb, context, f = unet.inputs(sample, timestep, encoder_hidden_states, timestep_cond)
        skips = [x]
        for level, block in enumerate(unet.down_blocks[:self.branch + 1]):
            if level < self.branch:
                x, kept = block(x, temb, context, f)
                skips += kept
            else:  # the turning level: its layers only (its downsampling feeds the deep path alone)
                for i in range(len(block.resnets)):
                    x = block.layer(i, x, temb, context, f)
                    skips.append(x)
        x = unet.up(self.feature, skips, temb, context, f, unet.up_blocks[len(unet.up_blocks) - 1 - self.branch:])
        return unet.head(x, f)


# ------------------------------------------------------------------------------ the premise, measured
@contextmanager
def recording_up_inputs(unet):
    """Record what enters each up level of ``unet`` at every call: ``{level: [tensor per call]}``, level 0 the
    deepest (its input comes from the mid block), the last the outermost (what DeepCache keeps with
    ``cache_branch=0``). For measuring how much those features change from one denoising step to the next."""
    records = {i: [] for i in range(len(unet.up_blocks))}
    hooks = [block.register_forward_pre_hook(lambda module, args, i=i: records[i].append(args[0].detach().clone()))
             for i, block in enumerate(unet.up_blocks)]
    try:
        yield records
    finally:
        for hook in hooks:
            hook.remove()


def relative_changes(features) -> torch.Tensor:
    """[f_0, f_1, ..., f_S] (one feature per step) -> (S,): ||f_s - f_{s-1}|| / ||f_s|| for s = 1..S, how far a
    feature kept at step s - 1 is from the one step s would compute (Frobenius norms)."""
    return torch.stack([(b - a).norm() / b.norm() for a, b in zip(features, features[1:])])
