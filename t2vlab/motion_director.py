"""Motion only: learn how clips move as a temporal LoRA that carries no appearance (MotionDirector).

Zhao et al., 2023, "MotionDirector: Motion Customization of Text-to-Video Diffusion Models". A LoRA
fine-tuned on a few clips of a dog running learns the running and the dog; moved to "a cat running", it
draws the dog. MotionDirector trains two adapters, on two paths through the same UNet, every step:

    appearance path  one frame f of each clip, as a 1-frame video; the spatial adapter acts and learns:
                         loss_s = || unet(x_t[:, :, f]) - eps[:, :, f] ||^2
    motion path      the whole clip; both adapters act, but only the temporal one learns (the spatial
                     adapter is detached here): with e = unet(x_t) - eps (B, C, F, h, w),
                         loss_t = mean(e^2) + mean(phi(e)^2)
                         phi(e)_i = sqrt(beta^2 + 1) e_i - beta e_a     (a: a random anchor frame, beta = 1)

The spatial adapter soaks up what single frames show (appearance), so the temporal one has less reason
to. phi is the appearance-debiased temporal loss: an error that every frame shares (a wrong colour,
a wrong dog) is cut to (sqrt(2) - 1)^2 = 0.17 of its weight, while an error that differs from frame to
frame (a wrong motion) keeps its weight (three times it, away from the anchor). Afterwards only the
temporal adapter is kept: ``pytorch_lora_weights.safetensors`` holds it alone, and the spatial one is
saved beside it (``appearance_lora.safetensors``) to look at, not to use.

``python -m t2vlab finetune --train motion ...`` runs it; this module holds the two paths and the loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lora import add_lora, lora_targets, set_active, set_frozen

APPEARANCE, MOTION = "appearance", "motion"  # the two adapters' names
BETA = 1.0  # the paper's weight of the anchor frame


def debias(x, anchor, beta=BETA):
    """phi(x) = sqrt(beta^2 + 1) x - beta x[:, :, anchor]: x (B, C, F, h, w), anchor (B,) frame indices."""
    at_anchor = x[torch.arange(len(x), device=x.device), :, anchor][:, :, None]  # (B, C, 1, h, w)
    return math.sqrt(beta**2 + 1) * x - beta * at_anchor


def temporal_loss(pred, target, anchor, beta=BETA):
    """The motion path's loss: the plain squared error plus the appearance-debiased one."""
    error = (pred - target).float()
    return error.pow(2).mean() + debias(error, anchor, beta).pow(2).mean()


def add_adapters(unet, rank, alpha=None, feed_forward=False):
    """The appearance adapter on the spatial layers and the motion adapter on the temporal ones; returns
    their parameters, to train (A's first values are drawn from torch's global generator)."""
    return (add_lora(unet, lora_targets(unet, "spatial", feed_forward), rank, alpha, APPEARANCE)
            + add_lora(unet, lora_targets(unet, "temporal", feed_forward), rank, alpha, MOTION))


class DualPath(nn.Module):
    """Both paths as one module, so that a data-parallel wrapper sees one forward per step.

    forward(x_t (B, C, F, h, w), t (B,), text (B, L, D), noise like x_t, frame (B,), anchor (B,)) -> the
    summed loss; ``last`` keeps the two parts ({"appearance", "motion"}) for the log."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.last = {}

    def forward(self, x_t, t, text, noise, frame, anchor):
        rows = torch.arange(len(x_t), device=x_t.device)
        set_active(self.unet, [APPEARANCE])  # appearance path: one frame, the spatial adapter alone
        set_frozen(self.unet, [])
        one_frame = x_t[rows, :, frame][:, :, None]  # (B, C, 1, h, w)
        appearance = F.mse_loss(self.unet(one_frame, t, text).float(), noise[rows, :, frame][:, :, None].float())
        set_active(self.unet, [APPEARANCE, MOTION])  # motion path: the clip, the spatial adapter detached
        set_frozen(self.unet, [APPEARANCE])
        try:
            motion = temporal_loss(self.unet(x_t, t, text), noise, anchor)
        finally:
            set_frozen(self.unet, [])
        self.last = {"appearance": appearance.detach(), "motion": motion.detach()}
        return appearance + motion
