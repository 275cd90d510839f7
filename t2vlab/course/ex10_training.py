"""Notebook 10's exercises: the loss that teaches the UNet, and the caption dropout that makes guidance possible."""

from __future__ import annotations

import torch

from ..schedulers import DDPMScheduler
from ..text_encoder import CLIPTextEncoder
from ..toy import train
from ..unet import UNet3DConditionModel
from ..weights import SCHEDULER_CONFIG
from .core import Exercise, call, compare, generator, register


def drop_captions(caption_ids, empty, u, p):
    """caption_ids (B,) integer rows of the tokenized captions; ``empty`` the row of ""; u (B,) uniform draws in
    [0, 1) -> (B,) the row each clip trains with: "" where u < p, its own caption elsewhere."""
    return torch.where(u < p, torch.full_like(caption_ids, empty), caption_ids)


def check_drop_captions(fn):
    g = generator(10)
    caption_ids, u, empty, p = torch.randint(8, (16,), generator=g), torch.rand(16, generator=g), 8, 0.3
    compare(call(fn, caption_ids, empty, u, p), train.drop_captions(caption_ids, empty, u, p),
            "drop_captions(caption_ids, empty=8, u, p=0.3)", mistakes={
                "dropping where u > p (then 70% of the captions are dropped, not 30%)":
                    torch.where(u > p, empty, caption_ids),
                "replacing a dropped caption by row 0 (another caption) instead of the empty caption's row":
                    torch.where(u < p, 0, caption_ids),
                "dropping every caption": torch.full_like(caption_ids, empty),
            })


def noise_prediction_loss(unet, text_encoder, alphas_cumprod, x0, ids, noise, t):
    """The epsilon-prediction loss of a batch. x0 (B, 4, F, h, w) clean latents, ids (B, L) token ids, noise
    like x0, t (B,) integer timesteps, alphas_cumprod (T,): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise;
    the mean of (unet(x_t, t, text_encoder(ids)) - noise)^2 over every value."""
    abar = alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)  # one per clip, broadcast over (C, F, h, w)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return ((unet(x_t, t, text_encoder(ids)) - noise) ** 2).mean()


def tiny_models():
    """A fresh, narrow toy UNet and text encoder (random weights, seeded without touching torch's global seed)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet3DConditionModel.from_config({**train.TOY_UNET, "block_out_channels": (16, 32, 32)}).eval()
        text = CLIPTextEncoder.from_config(train.TOY_TEXT).eval()
    return unet, text


@torch.no_grad()
def check_noise_prediction_loss(fn):
    unet, text = tiny_models()
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    abar = scheduler.alphas_cumprod
    g = generator(11)
    x0 = torch.randn(3, 4, 4, 8, 8, generator=g)
    ids = torch.randint(49408, (3, 8), generator=g)
    want = train.diffusion_loss(unet, text, scheduler, x0, ids, generator(12))  # draws the noise, then t
    g = generator(12)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(scheduler.config["num_train_timesteps"], (3,), generator=g)
    a = abar[t].reshape(-1, 1, 1, 1, 1)
    context = text(ids)

    def loss(x_t, target):
        return ((unet(x_t, t, context) - target) ** 2).mean()

    compare(call(fn, unet, text, abar, x0, ids, noise, t), want, "noise_prediction_loss(...)", mistakes={
        "predicting the clean latents x0 instead of the noise (the target is eps)":
            loss(a.sqrt() * x0 + (1 - a).sqrt() * noise, x0),
        "without the square roots (x_t = abar x0 + (1 - abar) eps)": loss(a * x0 + (1 - a) * noise, noise),
        "with x0 and the noise swapped in x_t (sqrt(abar) weighs the clean latents)":
            loss(a.sqrt() * noise + (1 - a).sqrt() * x0, noise),
        "at timestep t + 1's noise level (alphas_cumprod is indexed by t itself)":
            loss(abar[(t + 1).clamp(max=999)].reshape(-1, 1, 1, 1, 1).sqrt() * x0
                 + (1 - abar[(t + 1).clamp(max=999)].reshape(-1, 1, 1, 1, 1)).sqrt() * noise, noise),
    })


register(Exercise("10.caption_dropout", "caption dropout", "drop_captions", check_drop_captions, drop_captions,
                  hint="torch.where(u < p, empty, caption_ids)"))
register(Exercise("10.loss", "the noise-prediction loss", "noise_prediction_loss", check_noise_prediction_loss,
                  noise_prediction_loss,
                  hint="abar = alphas_cumprod[t] reshaped to (B, 1, 1, 1, 1); x_t from the forward process; "
                       "the mean squared error of the UNet's prediction against the noise"))
