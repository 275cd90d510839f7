"""Train the toy text-to-video model from scratch: the VAE first, then the UNet3D with its text encoder.

    python -m t2vlab.toy.train --out toy-checkpoint          # the shipped model: see docs/toy-model.md

It runs on a CPU (the shipped model was trained on a 2-core machine) and on a GPU (``--device cuda``).
The lesson is the loss. Stage 1 teaches a small VAE to reconstruct single frames: a squared error
that weighs the shape's pixels more than the background, plus a tiny KL term. Stage 2 encodes a
fixed set of training clips to latents once (the VAE is frozen from then on), then repeats the
denoising objective of every diffusion model:

    x0 = latents of a clip, eps ~ N(0, I), t ~ U{0..999}
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                  (scheduler.add_noise)
    loss = || unet(x_t, t, text(caption)) - eps ||^2              (epsilon prediction)

with the caption replaced by "" one time in ten, so the same network also learns the unconditional
prediction that classifier-free guidance subtracts. The CLIP-layout text encoder is small and learns
jointly with the UNet. An exponential moving average of the weights is what gets saved, in the
published layout (all five components).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checks import one_of
from ..pipeline import TextToVideoPipeline
from ..schedulers import DDPMScheduler
from ..text_encoder import CLIPTextEncoder
from ..tokenizer import Tokenizer
from ..unet import UNet3DConditionModel
from ..vae import AutoencoderKL
from ..weights import SCHEDULER_CONFIG, write_checkpoint
from . import data
from .evaluate import evaluate

# 64x64 frames -> 8x8x4 latents (8x, as in the real model); small widths so that a CPU trains it
TOY_VAE = dict(block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=8, sample_size=64,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# 8 text positions, not CLIP's 77: a caption is 7 tokens with its start and end tokens. With 77, the UNet's
# cross-attention spread itself over 70 padding tokens and gave the direction word 1% (docs/toy-model.md).
TOY_TEXT = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=8)
TOY_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64), layers_per_block=1, attention_head_dim=8,
                norm_num_groups=8, cross_attention_dim=32,
                down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"))
CAPTION_DROPOUT = 0.1  # share of captions replaced by "" (classifier-free guidance)
SHAPE_WEIGHT = 10.0    # the VAE's loss weight of the shape's pixels against the background's


def log(logfile, **fields):
    line = json.dumps(fields)
    print(line, flush=True)
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write(line + "\n")


# ----------------------------------------------------------------------------------- stage 1: VAE
def to_frames(clips):
    """(n, F, H, W, 3) in [0, 1] -> (n*F, 3, H, W) in [-1, 1], the VAE's input."""
    return clips.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1


def random_frames(n, seed, device=None):
    """n single frames, each from its own freshly drawn clip at a random time: (n, 3, 64, 64) in [-1, 1]."""
    clips, _ = data.make_clips(n, seed=seed, combos=data.ALL_COMBOS, device=device)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(data.FRAMES, (n,), generator=g).to(clips.device)
    return to_frames(clips[torch.arange(n, device=clips.device), pick][:, None])


def vae_loss(vae, x, kl_weight=1e-6):
    """(loss, plain MSE) of reconstructing frames x (n, 3, H, W) in [-1, 1].

    The shape covers about 7% of a frame, so a plain MSE is mostly about the background. The shape's
    pixels and its trail's (those with a channel above 0.2: backgrounds are at most 0.12, every colour
    has a channel of 0.8 or more) weigh SHAPE_WEIGHT times more, which is what makes the VAE keep
    colours, and the faint trail, after minutes."""
    posterior = vae.encode(x)
    recon = vae.decoder(vae.post_quant_conv(posterior.sample()))
    loss = weighted_error(recon, x) + kl_weight * posterior.kl().mean()
    return loss, F.mse_loss(recon, x)


def weighted_error(recon, x):
    """The squared error with the shape's pixels (a channel above 0.2 in [0, 1]) weighing SHAPE_WEIGHT times more."""
    weight = 1 + (SHAPE_WEIGHT - 1) * (x.amax(1, keepdim=True) > -0.6).float()
    return (weight * (recon - x) ** 2).mean()


def train_vae(vae, seconds, device, batch=64, lr=2e-3, seed=0, logfile=None, max_steps=None):
    """Reconstruct freshly drawn frames for ``seconds`` (or ``max_steps``): AdamW, cosine decay."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    start, step = time.time(), 0
    while time.time() - start < seconds and (max_steps is None or step < max_steps):
        progress = max((time.time() - start) / seconds, step / max_steps if max_steps else 0.0)
        for group in opt.param_groups:  # cosine decay over the budget: the last steps polish the details
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        loss, mse = vae_loss(vae, random_frames(batch, seed=10_000_000 + seed * 1_000_003 + step, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0 or step == 1:
            log(logfile, stage="vae", step=step, seconds=round(time.time() - start, 1), mse=round(mse.item(), 5))
    vae.eval()
    return step, time.time() - start


@torch.no_grad()
def encode_clips(vae, n, device, seed=0, chunk=256):
    """Latents (n, 4, F, h, w) of n training clips (the posterior mean) and their captions."""
    latents, labels = [], []
    for i in range(0, n, chunk):
        clips, lab = data.make_clips(min(chunk, n - i), seed=seed * 1_000_003 + i, device=device)
        z = vae.encode(to_frames(clips)).mode()  # (m*F, 4, h, w)
        latents.append(z.unflatten(0, (len(clips), data.FRAMES)).transpose(1, 2))
        labels += data.captions(lab)
    return torch.cat(latents), labels


# ----------------------------------------------------------------------------------- stage 2: UNet
def timestep_probabilities(scheduler, kind="uniform", cap=20.0):
    """How often each training timestep is drawn: "uniform", or "mixed" for the direction phase.

    The epsilon loss weighs a timestep's error in x0 by its signal-to-noise ratio abar / (1 - abar),
    about 0.005 at t = 999. Where a clip's layout is decided (which way the shape will move: high t,
    nearly pure noise) the loss barely cares, and a model learns colour in minutes but never ties
    motion to the words "left" or "right". "mixed" draws half the timesteps uniformly and half in
    proportion to (1 - abar) / abar, capped at ``cap`` (and at least 1): most of those at t > 700."""
    one_of("timesteps", kind, ("uniform", "mixed"))
    n = scheduler.config["num_train_timesteps"]
    uniform = torch.full((n,), 1.0 / n)
    if kind == "uniform":
        return uniform
    abar = scheduler.alphas_cumprod.double()
    w = ((1 - abar) / abar).clamp(1.0, cap)
    return (0.5 * uniform.double() + 0.5 * w / w.sum()).float()


def loss_weights(scheduler, cap=100.0):
    """Per-timestep weights of the epsilon loss for the "x0" weighting: (1 - abar) / abar clipped to
    [1, ``cap``], scaled to mean 1 over uniform t. An error in the predicted clean latents counts
    about as much at high noise as at low noise, up to the cap (see timestep_probabilities)."""
    abar = scheduler.alphas_cumprod.double()
    w = ((1 - abar) / abar).clamp(1.0, cap)
    return (w / w.mean()).float()


def drop_captions(caption_ids, empty, u, p=CAPTION_DROPOUT):
    """Caption dropout: which caption each clip of a batch trains with. ``caption_ids`` (B,) index the rows of
    the tokenized captions, ``empty`` is the row of the empty caption "", ``u`` (B,) uniform draws in [0, 1):
    a clip whose draw is below ``p`` trains with "", so that one network learns both the conditional and the
    unconditional prediction that classifier-free guidance combines."""
    return torch.where(u < p, empty, caption_ids)


def diffusion_loss(unet, text_encoder, scheduler, x0, context_ids, generator, probabilities=None, weights=None):
    """The epsilon-prediction loss at one random timestep per clip (uniform, or drawn from ``probabilities``),
    each clip's squared error multiplied by ``weights[t]`` when given.

    x0 (B, 4, F, h, w) scaled latents; context_ids (B, L) token ids, "" already swapped in."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    if probabilities is None:
        t = torch.randint(scheduler.config["num_train_timesteps"], (len(x0),), generator=generator)
    else:
        t = torch.multinomial(probabilities, len(x0), replacement=True, generator=generator)
    t = t.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    error = (unet(x_t, t, text_encoder(context_ids)) - noise) ** 2
    if weights is None:
        return error.mean()
    return (weights.to(x0.device)[t] * error.flatten(1).mean(1)).mean()


def train_unet(unet, text_encoder, latents, caption_ids, ids, seconds, device, batch=32, lr=1e-3, seed=0,
               logfile=None, max_steps=None, ema_decay=0.995, callback=None, callback_every=None, timesteps="uniform",
               weighting="eps"):
    """The diffusion loss with caption dropout, AdamW at a constant rate after a short warm-up.

    latents (N, 4, F, h, w) already scaled; caption_ids (N,) index rows of ``ids`` (the tokenized
    captions, whose last row is the empty caption ""). ``callback(step, unet_ema, text_ema)`` runs
    every ``callback_every`` seconds (not counted in the budget). Returns the EMA copies and counts."""
    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    probabilities = timestep_probabilities(scheduler, timesteps)
    one_of("weighting", weighting, ("eps", "x0"))
    weights = loss_weights(scheduler) if weighting == "x0" else None
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = [copy.deepcopy(m).eval().requires_grad_(False) for m in (unet, text_encoder)]
    ema_params, live_params = [list(m.parameters()) for m in ema], [list(m.parameters()) for m in (unet, text_encoder)]
    g = torch.Generator(device="cpu").manual_seed(seed)
    empty = len(ids) - 1
    unet.train(), text_encoder.train()
    step, spent, losses = 0, 0.0, []
    tick = last_callback = time.time()
    while spent < seconds and (max_steps is None or step < max_steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        pick = torch.randint(len(latents), (batch,), generator=g)
        which = drop_captions(caption_ids[pick], empty, torch.rand(batch, generator=g))
        loss = diffusion_loss(unet, text_encoder, scheduler, latents[pick.to(latents.device)],
                              ids[which.to(ids.device)], g, probabilities, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(ema_decay, (1 + step) / (10 + step))  # a short memory early on, when the weights move fast
        with torch.no_grad():
            for avg, live in zip(ema_params, live_params):
                torch._foreach_lerp_(avg, live, 1 - decay)
        losses.append(loss.item())
        now = time.time()
        spent += now - tick
        tick = now
        if step % 100 == 0 or step == 1:
            log(logfile, stage="unet", step=step, seconds=round(spent, 1), loss=round(sum(losses) / len(losses), 5),
                seconds_per_step=round(spent / step, 4))
            losses = []
        if callback is not None and callback_every and now - last_callback >= callback_every:
            callback(step, *ema)
            tick = last_callback = time.time()
    return ema[0], ema[1], step, spent


# ----------------------------------------------------------------------------------- saving
def save_checkpoint(path, unet, vae, text_encoder, dtype=torch.float16, extra=None):
    """Write the published layout (weights in ``dtype``, default names); the folder appears whole."""
    models = {name: copy.deepcopy(model).to("cpu") for name, model in
              (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    return write_checkpoint(path, models, overwrite=True, variants=((None, dtype),),
                            extra={"training.json": extra} if extra else None)


def train(out, device="cpu", vae_minutes=8.0, unet_minutes=40.0, clips=4000, batch=32, lr=1e-3, seed=0,
          vae_steps=None, unet_steps=None, vae_from=None, init=None, logfile=None, eval_every=None,
          timesteps="uniform", weighting="eps", command="python -m t2vlab.toy.train"):
    """Both stages (or the UNet only, on the VAE of the checkpoint ``vae_from``); writes ``out``.

    ``init``: continue from that checkpoint (its VAE, its UNet and text encoder as the starting
    weights; the optimizer starts afresh). ``eval_every`` (seconds): score the EMA model with the
    evaluator that often, logging the accuracies."""
    torch.manual_seed(seed)
    t_start = time.time()
    if init is not None:
        vae_from, f32 = init, torch.float32
        text_encoder = CLIPTextEncoder.from_pretrained(Path(init) / "text_encoder", torch_dtype=f32).to(device)
        unet = UNet3DConditionModel.from_pretrained(Path(init) / "unet", torch_dtype=f32).to(device)
    else:
        text_encoder = CLIPTextEncoder.from_config(TOY_TEXT).to(device)
        unet = UNet3DConditionModel.from_config(TOY_UNET).to(device)
    if vae_from is not None:
        vae = AutoencoderKL.from_pretrained(Path(vae_from) / "vae", torch_dtype=torch.float32).to(device).eval()
        n_vae, s_vae = 0, 0.0
    else:
        vae = AutoencoderKL.from_config(TOY_VAE).to(device)
        n_vae, s_vae = train_vae(vae, vae_minutes * 60, device, seed=seed, logfile=logfile, max_steps=vae_steps)
    vae.requires_grad_(False)

    t0 = time.time()
    latents, captions = encode_clips(vae, clips, device, seed=seed)
    vae.config.scaling_factor = round(1.0 / latents.float().std().item(), 5)  # unit variance, as the scheduler assumes
    latents = latents * vae.config.scaling_factor
    names = data.all_captions("all")
    caption_ids = torch.tensor([names.index(c) for c in captions])
    ids = Tokenizer.default(text_encoder.config.max_position_embeddings)(names + [""]).input_ids.to(device)
    s_cache = time.time() - t0
    log(logfile, stage="latents", clips=clips, seconds=round(s_cache, 1), scaling_factor=vae.config.scaling_factor)

    def score(step, unet_ema, text_ema):
        save_checkpoint(out, unet_ema, vae, text_ema)
        _, summary, _ = evaluate(TextToVideoPipeline.from_pretrained(out, device=device))
        log(logfile, stage="eval", step=step, **{f"{split}_{k}": round(v[k], 3) for split, v in summary.items()
                                                 for k in ("colour", "direction")})

    unet_ema, text_ema, n_unet, s_unet = train_unet(
        unet, text_encoder, latents, caption_ids, ids, unet_minutes * 60, device, batch=batch, lr=lr, seed=seed,
        logfile=logfile, max_steps=unet_steps, callback=score if eval_every else None, callback_every=eval_every,
        timesteps=timesteps, weighting=weighting)
    extra = {"command": command, "device": str(device),
             "device_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
             "threads": torch.get_num_threads(), "vae_steps": n_vae, "vae_seconds": round(s_vae, 1),
             "vae_from": str(vae_from) if vae_from else None, "init": str(init) if init else None,
             "latent_clips": clips, "cache_seconds": round(s_cache, 1),
             "unet_steps": n_unet, "unet_seconds": round(s_unet, 1), "batch": batch, "lr": lr,
             "timesteps": timesteps, "weighting": weighting,
             "total_seconds": round(time.time() - t_start, 1), "seed": seed, "torch": torch.__version__}
    save_checkpoint(out, unet_ema, vae, text_ema, extra=extra)
    log(logfile, stage="saved", **extra)
    return Path(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the toy text-to-video model (VAE, then UNet3D + text encoder).")
    p.add_argument("--out", required=True, help="checkpoint folder to write (published layout)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--vae-minutes", type=float, default=8.0, help="stage 1's time budget")
    p.add_argument("--unet-minutes", type=float, default=40.0, help="stage 2's time budget")
    p.add_argument("--clips", type=int, default=4000, help="training clips encoded to latents")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=None, help="stop the VAE after this many steps")
    p.add_argument("--unet-steps", type=int, default=None, help="stop the UNet after this many steps")
    p.add_argument("--vae-from", default=None, help="skip stage 1: use this checkpoint's VAE")
    p.add_argument("--init", default=None, help="continue training this checkpoint (skips stage 1)")
    p.add_argument("--timesteps", default="uniform", choices=("uniform", "mixed"),
                   help="how training timesteps are drawn (see timestep_probabilities)")
    p.add_argument("--weighting", default="eps", choices=("eps", "x0"),
                   help="the loss per timestep: plain epsilon, or x0-like (see loss_weights)")
    p.add_argument("--eval-every", type=float, default=None, help="score the model every this many seconds")
    p.add_argument("--log", default=None, help="append JSON lines of progress here")
    args = p.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    train(args.out, device=args.device, vae_minutes=args.vae_minutes, unet_minutes=args.unet_minutes,
          clips=args.clips, batch=args.batch, lr=args.lr, seed=args.seed, vae_steps=args.vae_steps,
          unet_steps=args.unet_steps, vae_from=args.vae_from, init=args.init, logfile=args.log,
          eval_every=args.eval_every, timesteps=args.timesteps, weighting=args.weighting,
          command=" ".join(["python -m t2vlab.toy.train", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    main()
