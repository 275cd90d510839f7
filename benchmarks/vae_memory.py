"""Peak CPU memory of decoding (or encoding) a video with the full-width VAE, with and without slicing.

    python benchmarks/vae_memory.py [--size 64] [--frames 16 64] [--encode]

Builds the published VAE config (83.7 M parameters, random weights: memory does not depend on
the values) at a small frame size, and measures the extra peak resident memory of one decode of
F frames (benchmarks/common.py: peak_memory):

- ours:      ``vae.decode_video(latents)``, frames folded into the batch, finished slice by slice;
- diffusers: ``vae.decode(folded_latents)`` (what TextToVideoSDPipeline.decode_latents calls), with
             ``enable_slicing()`` / ``disable_slicing()``.

The "output" column is the size of the decoded float32 frames, which any decoder must hold.

With ``--encode``, one encode of F frames to latents, including the posterior's sample (what
video-to-video does first):

- ours:      ``vae.encode_video(frames, generator)``, frames (1, F, H, W, 3) in [0, 1], each slice moved,
             mapped to [-1, 1] and encoded as it comes;
- diffusers: ``vae.encode(folded_frames).latent_dist.sample(generator)``, folded frames (F, 3, H, W) in
             [-1, 1] (what VideoToVideoSDPipeline.prepare_latents calls), with ``enable_slicing()`` /
             ``disable_slicing()`` (the reference pipeline leaves it off).

The "input" column is then the size of the float32 frames, which the caller holds already.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mib, peak_memory, print_table  # noqa: E402

from t2vlab import AutoencoderKL, configs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--config", type=Path, default=None, help="a vae config.json (default: the published one)")
    ap.add_argument("--no-diffusers", action="store_true")
    ap.add_argument("--encode", action="store_true", help="measure encoding instead of decoding")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: keep runs comparable
    cfg = json.loads(args.config.read_text()) if args.config else configs.VAE
    ours = AutoencoderKL.from_config(cfg).eval()
    ref = None
    if not args.no_diffusers:
        import diffusers
        ref = diffusers.AutoencoderKL.from_config(cfg).eval()
        ref.load_state_dict(ours.state_dict())
    if args.encode:
        return encode_table(args, ours, ref)
    h = args.size // ours.spatial_factor
    rows = []
    for frames in args.frames:
        latents = torch.randn(1, 4, frames, h, h)
        folded = latents.permute(0, 2, 1, 3, 4).reshape(frames, 4, h, h) / ours.config.scaling_factor
        out = frames * 3 * args.size * args.size * 4
        for sliced in (False, True):
            row = [frames, "yes" if sliced else "no", mib(out),
                   mib(peak_memory(partial(decode_ours, ours, latents, sliced)))]
            if ref is not None:
                row.append(mib(peak_memory(partial(decode_diffusers, ref, folded, sliced))))
            rows.append(row)
    headers = ["frames", "slicing", "output MiB", "ours peak MiB", "diffusers peak MiB"][:5 if ref else 4]
    title = f"VAE decode, full-width config, {args.size}x{args.size} frames, CPU float32, 1 thread"
    print_table(headers, rows, title=title)


def encode_table(args, ours, ref):
    rows = []
    for frames in args.frames:
        video = torch.rand(1, frames, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
        folded = (video[0].permute(0, 3, 1, 2) * 2 - 1).contiguous()
        for sliced in (False, True):
            row = [frames, "yes" if sliced else "no", mib(video.numel() * 4),
                   mib(peak_memory(partial(encode_ours, ours, video, sliced)))]
            if ref is not None:
                row.append(mib(peak_memory(partial(encode_diffusers, ref, folded, sliced))))
            rows.append(row)
    headers = ["frames", "slicing", "input MiB", "ours peak MiB", "diffusers peak MiB"][:5 if ref else 4]
    title = (f"VAE encode (with the posterior sample), full-width config, {args.size}x{args.size} frames, "
             "CPU float32, 1 thread")
    print_table(headers, rows, title=title)


def encode_ours(vae, video, sliced):
    vae.enable_slicing(1) if sliced else vae.disable_slicing()
    with torch.no_grad():
        vae.encode_video(video, torch.Generator().manual_seed(0))


def encode_diffusers(vae, folded, sliced):
    vae.enable_slicing() if sliced else vae.disable_slicing()
    with torch.no_grad():
        vae.encode(folded).latent_dist.sample(torch.Generator().manual_seed(0))


def decode_ours(vae, latents, sliced):
    vae.enable_slicing(1) if sliced else vae.disable_slicing()
    with torch.no_grad():
        vae.decode_video(latents)


def decode_diffusers(vae, folded, sliced):
    vae.enable_slicing() if sliced else vae.disable_slicing()
    with torch.no_grad():
        vae.decode(folded)

if __name__ == "__main__":
    main()
