"""Train the toy text-to-video model from scratch: the VAE first, then the UNet3D (with the text encoder).

    python -m t2vlab.toy.train --out toy-checkpoint --device cuda --minutes 7.5

The lesson is the loss. Stage 1 teaches a small VAE to reconstruct single frames (MSE plus a tiny
KL term). Stage 2 encodes a fixed set of training clips to latents once (the VAE is frozen from then
on), then repeats the denoising objective of every diffusion model:

    x0 = latents of a clip, eps ~ N(0, I), t ~ U{0..999}
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps                  (scheduler.add_noise)
    loss = || unet(x_t, t, text(caption)) - eps ||^2              (epsilon prediction)

with the caption replaced by "" one time in ten, so the same network also learns the unconditional
prediction that classifier-free guidance subtracts. The CLIP-layout text encoder is small and learns
jointly with the UNet. The result is written in the published layout (all five components).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..text import CLIPTextEncoder, Tokenizer
from ..tiny import SCHEDULER_CONFIG, write_checkpoint
from ..unet import UNet3DConditionModel
from ..vae import AutoencoderKL
from . import data

TOY_VAE = dict(block_out_channels=(32, 64, 64, 64), layers_per_block=1, norm_num_groups=8, sample_size=64,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TOY_TEXT = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TOY_UNET = dict(sample_size=8, block_out_channels=(32, 64, 64, 64), layers_per_block=1, attention_head_dim=8,
                norm_num_groups=8, cross_attention_dim=32,
                down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3)
CAPTION_DROPOUT = 0.1


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


def train_vae(vae, seconds, device, batch=32, lr=1e-3, kl_weight=1e-6, seed=0, logfile=None, max_steps=None):
    """Reconstruct freshly drawn frames: MSE + kl_weight * KL, AdamW, for ``seconds`` (or max_steps)."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    start, step = time.time(), 0
    while time.time() - start < seconds and (max_steps is None or step < max_steps):
        clips, _ = data.make_clips(batch, seed=10_000_000 + seed * 1_000_003 + step, device=device)
        x = to_frames(clips)
        posterior = vae.encode(x)
        recon = vae.decoder(vae.post_quant_conv(posterior.sample()))
        mse = F.mse_loss(recon, x)
        loss = mse + kl_weight * posterior.kl().mean()
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
    """Latents (n, 4, F, h, w) of n training clips (the posterior mean) and their caption indices."""
    latents, labels = [], []
    for i in range(0, n, chunk):
        clips, lab = data.make_clips(min(chunk, n - i), seed=seed * 1_000_003 + i, device=device)
        z = vae.encode(to_frames(clips)).mode()  # (m*F, 4, h, w)
        latents.append(z.unflatten(0, (len(clips), data.FRAMES)).transpose(1, 2))
        labels += data.captions(lab)
    return torch.cat(latents), labels


# ----------------------------------------------------------------------------------- stage 2: UNet
def train_unet(unet, text_encoder, latents, caption_ids, ids, seconds, device, batch=64, lr=5e-4, seed=0,
               logfile=None, max_steps=None, ema_decay=0.999):
    """The epsilon-prediction loss over random timesteps, with caption dropout for guidance.

    latents (N, 4, F, h, w) already scaled; caption_ids (N,) index rows of ``ids`` (the tokenized
    captions, whose last row is the empty caption ""). Returns EMA copies of both models."""
    from ..schedulers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(SCHEDULER_CONFIG)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ema = [copy.deepcopy(unet).eval().requires_grad_(False), copy.deepcopy(text_encoder).eval().requires_grad_(False)]
    g = torch.Generator(device="cpu").manual_seed(seed)
    empty = len(ids) - 1
    use_amp = torch.device(device).type == "cuda"
    unet.train(), text_encoder.train()
    start, step = time.time(), 0
    while True:
        elapsed = time.time() - start
        if elapsed >= seconds or (max_steps is not None and step >= max_steps):
            break
        progress = max(elapsed / seconds, step / max_steps if max_steps else 0.0)
        for group in opt.param_groups:  # linear warm-up, then cosine decay to a tenth, over the time budget
            group["lr"] = lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        pick = torch.randint(len(latents), (batch,), generator=g)
        x0 = latents[pick.to(latents.device)]
        which = caption_ids[pick]
        which = torch.where(torch.rand(batch, generator=g) < CAPTION_DROPOUT, empty, which)  # "" for CFG
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(scheduler.config["num_train_timesteps"], (batch,), generator=g)
        x_t = scheduler.add_noise(x0, noise, t.to(device))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            context = text_encoder(ids)[which.to(device)]  # encode the 49 distinct captions once, pick rows
            pred = unet(x_t, t.to(device), context)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for avg, model in zip(ema, (unet, text_encoder)):
                for pa, p in zip(avg.parameters(), model.parameters()):
                    pa.lerp_(p, 1 - decay)
        if step % 200 == 0 or step == 1:
            log(logfile, stage="unet", step=step, seconds=round(time.time() - start, 1), loss=round(loss.item(), 5),
                lr=round(opt.param_groups[0]["lr"], 6), seconds_per_step=round((time.time() - start) / step, 4))
    return ema[0], ema[1], step, time.time() - start


# ----------------------------------------------------------------------------------- saving
def save_checkpoint(path, unet, vae, text_encoder, dtype=torch.float16, extra=None):
    """Write the published layout (weights in ``dtype``, default names); the folder appears whole."""
    models = {name: copy.deepcopy(model).to("cpu") for name, model in
              (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    return write_checkpoint(path, models, overwrite=True, variants=((None, dtype),),
                            extra={"training.json": extra} if extra else None)


def train(out, device="cpu", minutes=7.5, vae_share=0.2, clips=20_000, batch=64, vae_batch=32, seed=0,
          vae_steps=None, unet_steps=None, logfile=None):
    """Both stages within ``minutes`` (or the given step counts); writes the checkpoint to ``out``."""
    torch.manual_seed(seed)
    t_start = time.time()
    vae = AutoencoderKL.from_config(TOY_VAE).to(device)
    text_encoder = CLIPTextEncoder.from_config(TOY_TEXT).to(device)
    unet = UNet3DConditionModel.from_config(TOY_UNET).to(device)
    budget = minutes * 60
    n_vae, s_vae = train_vae(vae, budget * vae_share, device, batch=vae_batch, seed=seed, logfile=logfile,
                             max_steps=vae_steps)
    vae.requires_grad_(False)

    t0 = time.time()
    latents, captions = encode_clips(vae, clips, device, seed=seed)
    scale = 1.0 / latents.float().std().item()  # so that the latents have unit variance, as the scheduler assumes
    vae.config.scaling_factor = round(scale, 5)
    latents = latents * vae.config.scaling_factor
    names = data.all_captions("all")
    caption_ids = torch.tensor([names.index(c) for c in captions])
    ids = Tokenizer.default()(names + [""]).input_ids.to(device)
    s_cache = time.time() - t0
    log(logfile, stage="latents", clips=clips, seconds=round(s_cache, 1), scaling_factor=vae.config.scaling_factor)

    remaining = max(budget - (time.time() - t_start), 1.0)
    unet_ema, text_ema, n_unet, s_unet = train_unet(unet, text_encoder, latents, caption_ids, ids, remaining, device,
                                                    batch=batch, seed=seed, logfile=logfile, max_steps=unet_steps)
    extra = {"command": "python -m t2vlab.toy.train", "device": str(device),
             "device_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
             "vae_steps": n_vae, "vae_seconds": round(s_vae, 1), "vae_batch": vae_batch, "latent_clips": clips,
             "cache_seconds": round(s_cache, 1), "unet_steps": n_unet, "unet_seconds": round(s_unet, 1),
             "batch": batch, "total_seconds": round(time.time() - t_start, 1), "seed": seed,
             "torch": torch.__version__}
    save_checkpoint(out, unet_ema, vae, text_ema, extra=extra)
    log(logfile, stage="saved", **extra)
    return Path(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the toy text-to-video model (VAE, then UNet3D + text encoder).")
    p.add_argument("--out", required=True, help="checkpoint folder to write (published layout)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--minutes", type=float, default=7.5, help="total time budget (the shipped model: 7.5 on an H100)")
    p.add_argument("--vae-share", type=float, default=0.2, help="share of the budget for the VAE")
    p.add_argument("--clips", type=int, default=20_000, help="training clips encoded to latents")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vae-steps", type=int, default=None, help="stop the VAE after this many steps")
    p.add_argument("--unet-steps", type=int, default=None, help="stop the UNet after this many steps")
    p.add_argument("--log", default=None, help="append JSON lines of progress here")
    args = p.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
    train(args.out, device=args.device, minutes=args.minutes, vae_share=args.vae_share, clips=args.clips,
          batch=args.batch, seed=args.seed, vae_steps=args.vae_steps, unet_steps=args.unet_steps, logfile=args.log)


if __name__ == "__main__":
    main()
