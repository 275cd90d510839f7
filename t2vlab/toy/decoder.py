"""Extend the toy VAE's decoder to new colours, leaving its encoder (and so the UNet's latents) untouched.

    python -m t2vlab.toy.decoder --out VAE_FOLDER [--from toy] [--steps 600] [--new-colours purple|any]

The toy VAE learnt to reconstruct the four colours of its world and nothing else: a purple shape goes
in and comes back red (its decoder only ever fitted four colours). The real model's VAE was trained on
millions of images and draws any colour; to teach the toy model a new colour word with a LoRA (notebook
14), its VAE must be able to show that colour first. This stage fine-tunes the decoder alone:

    z = encoder(x)                                   frozen: the latent space the UNet learnt is kept
    loss = || w * (decoder(z) - x) ||^2              w: the shape's pixels weigh SHAPE_WEIGHT times more

on three kinds of example, a third of each batch each: frames with shapes of the new colours (purple, or
random colours of the whole wheel: ``data.random_colours``), frames of the toy world (its four colours stay
as they were), and latents the toy model itself generates for its 48 captions, whose target is what the
shipped decoder made of them. That last part matters: a generated latent is never exactly an encoder's,
and the shipped decoder turned a slightly-off blue into blue; a new decoder must keep doing so.

``--new-colours any`` (a decoder for every colour) was tried first and is kept as an option: it shows
purple, but with the purple LoRA loaded it drew blue shapes teal (read green in 11 of 24 videos). The
encoder, trained on four colours, packs nearby colours close together (blue and teal are 0.22 apart in
latent RMS, blue and purple 0.40), so a decoder that tells them apart magnifies the UNet's small latent
errors. ``--new-colours purple`` extends the world by its fifth colour only, which is what ships as
``t2vlab/data/toy_purple_vae/`` (``toy.purple.purple_vae()``, with its ``training.json``). The toy
checkpoint keeps its own VAE, so every figure measured on it stays as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from ..atomic import atomic_folder
from ..pipeline import TextToVideoPipeline
from ..schedulers import from_name
from ..vae import AutoencoderKL
from ..weights import resolve_checkpoint
from . import data
from .evaluate import colour_and_direction
from .train import log, to_frames, weighted_error


def frames(n, seed, colours="world"):
    """n single frames (n, 3, 64, 64) in [-1, 1], each from its own clip at a random time, with shapes of the
    world's four colours ("world"), of purple ("purple") or of random colours ("any")."""
    labels = data.sample_labels(n, seed, data.PURPLE_COMBOS if colours == "purple" else data.ALL_COMBOS)
    if colours == "any":
        labels["rgb"] = data.random_colours(n, seed)
    clips = data.render(labels)
    pick = torch.randint(data.FRAMES, (n,), generator=torch.Generator().manual_seed(seed))
    return to_frames(clips[torch.arange(n), pick][:, None])


@torch.no_grad()
def generated(pipe, seeds=range(8), steps=25):
    """(latents (n, 4, 8, 8) unscaled, frames (n, 3, 64, 64) in [-1, 1]): every frame of the videos the toy
    ``pipe`` draws for its 48 captions and ``seeds``, and what its decoder makes of them."""
    pipe.scheduler = from_name("dpm++", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = data.all_captions("all")
    z = torch.cat([pipe(prompts, num_frames=data.FRAMES, num_inference_steps=steps, output_type="latent",
                        generator=torch.Generator().manual_seed(seed)).frames for seed in seeds])  # (B, 4, F, 8, 8)
    z = z.float().transpose(1, 2).flatten(0, 1) / pipe.vae.config.scaling_factor  # (B*F, 4, 8, 8)
    frames = torch.cat([pipe.vae.float().decode(part) for part in z.split(256)])
    return z, frames.clamp(-1, 1)


def decoder_loss(vae, x, kept=None):
    """The shape-weighted squared error of decoding the frozen encoder's latents of x (n, 3, H, W), plus,
    with ``kept`` = (latents, frames), that of decoding those latents to those frames."""
    with torch.no_grad():
        z = vae.encode(x).sample()
    loss = weighted_error(vae.decoder(vae.post_quant_conv(z)), x)
    if kept is not None:
        loss = loss + weighted_error(vae.decoder(vae.post_quant_conv(kept[0])), kept[1])
    return loss


def train_decoder(vae, steps=600, batch=64, lr=5e-4, seed=0, logfile=None, kept=None, new="purple"):
    """Fine-tune ``vae``'s decoder (and post_quant_conv) for ``steps`` steps: AdamW, cosine decay. ``kept``:
    (latents, frames) the decoder must keep (``generated``); a third of each batch is drawn from them."""
    vae.requires_grad_(False)
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.train()
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        base = 20_000_000 + seed * 1_000_003 + 2 * step
        n = batch // 3 if kept is not None else batch // 2
        x = torch.cat([frames(n, base, colours=new), frames(n, base + 1, colours="world")])
        part = None
        if kept is not None:
            pick = torch.randint(len(kept[0]), (batch - 2 * n,), generator=torch.Generator().manual_seed(base))
            part = (kept[0][pick], kept[1][pick])
        loss = decoder_loss(vae, x, part)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step == 0:
            log(logfile, stage="decoder", step=step + 1, seconds=round(time.time() - start, 1),
                loss=round(loss.item(), 5))
    vae.eval().requires_grad_(False)
    return time.time() - start


@torch.no_grad()
def colours_kept(vae, combos, n=48, seed=77):
    """Share of ``n`` clips of ``combos`` whose reconstruction the evaluator reads as the right colour."""
    clips, labels = data.make_clips(n, seed=seed, combos=combos)
    right = 0
    for clip, colour in zip(clips, labels["colour"].tolist()):
        x = (clip.permute(0, 3, 1, 2) * 2 - 1).to(vae.device, vae.dtype)
        recon = vae.decode(vae.encode(x).mean).float().cpu()
        seen, _ = colour_and_direction(((recon + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1))
        right += seen == list(data.PALETTE)[colour]
    return right / n


def main(argv=None):
    p = argparse.ArgumentParser(description="Extend the toy VAE's decoder to new colours (encoder frozen).")
    p.add_argument("--out", required=True, help="VAE folder to write (config, weights in float16, training.json)")
    p.add_argument("--from", dest="source", default="toy", help="checkpoint whose VAE to start from")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--new-colours", choices=("purple", "any"), default="purple",
                   help="the colours taught besides the world's: random ones, or purple alone")
    p.add_argument("--keep-seeds", type=int, default=8, help="videos per caption whose decoding is kept (0: none)")
    p.add_argument("--log", default=None, help="append JSON lines of progress here")
    args = p.parse_args(argv)
    source = resolve_checkpoint(args.source)
    vae = AutoencoderKL.from_pretrained(source / "vae", torch_dtype=torch.float32)
    before = {"purple": colours_kept(vae, data.PURPLE_COMBOS), "world": colours_kept(vae, data.ALL_COMBOS)}
    kept = None
    if args.keep_seeds:
        kept = generated(TextToVideoPipeline.from_pretrained(source), seeds=range(args.keep_seeds))
        log(args.log, stage="kept", latents=len(kept[0]))
    seconds = train_decoder(vae, steps=args.steps, seed=args.seed, logfile=args.log, kept=kept, new=args.new_colours)
    after = {"purple": colours_kept(vae, data.PURPLE_COMBOS), "world": colours_kept(vae, data.ALL_COMBOS)}
    log(args.log, stage="decoder_done", before=before, after=after)
    training = {"command": " ".join(["python -m t2vlab.toy.decoder", *(sys.argv[1:] if argv is None else argv)]),
                "from": args.source, "steps": args.steps, "new_colours": args.new_colours,
                "kept_videos_per_caption": args.keep_seeds,
                "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "colour_read_right_after_reconstruction": {"before": before, "after": after}}
    with atomic_folder(Path(args.out), overwrite=True) as tmp:  # the folder appears whole or not at all
        vae.to(torch.float16).save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    print("wrote", args.out, "colour read right after reconstruction:", before, "->", after)


if __name__ == "__main__":
    main()
