"""python -m t2vlab "a prompt" --out video.mp4 — generate one video from the command line.

Without --model: the real checkpoint (damo-vilab/text-to-video-ms-1.7b, fp16) when a CUDA GPU is
present and the weights can be had (downloaded or in the Hub cache), else the embedded toy one: a
tiny model of the same architecture that t2vlab trained on coloured shapes ("a red circle moving
left"; it draws the colour and the direction it is asked for). 'tiny' is the same size with random
weights (its videos are noise).
It always says which it used.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv=None):
    from .schedulers import SCHEDULER_NAMES

    ap = argparse.ArgumentParser(prog="python -m t2vlab", description="Generate a video from a text prompt.")
    ap.add_argument("prompt", help="what the video should show")
    ap.add_argument("--out", default="video.mp4", help="output file, .mp4 or .gif (default: video.mp4)")
    ap.add_argument("--model", default=None,
                    help="checkpoint folder, Hub id, 'toy' or 'tiny' (default: the real one on a GPU, else toy)")
    ap.add_argument("--negative", default=None, help="negative prompt")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 25, tiny: 10)")
    ap.add_argument("--frames", type=int, default=None, help="number of frames (default 16, toy and tiny: 8)")
    ap.add_argument("--size", type=int, default=None, help="height and width in pixels (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=9.0, help="classifier-free guidance scale (default 9)")
    ap.add_argument("--scheduler", default="dpm++", choices=SCHEDULER_NAMES, help="sampler (default dpm++)")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ap.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    ap.add_argument("--offload", action="store_true", help="keep models on the CPU until each runs (GPU)")
    ap.add_argument("--vae-slicing", action="store_true", help="decode one frame at a time")
    return ap.parse_args(argv)


def load(args):
    import torch

    from .pipeline import EMBEDDED_CHECKPOINTS, REAL_CHECKPOINT, TextToVideoPipeline

    gpu = torch.cuda.is_available()
    dtype = torch.float16 if (args.fp16 or (gpu and args.model is None)) and gpu else torch.float32
    variant = "fp16" if dtype == torch.float16 else None
    if args.model is None and gpu:
        try:
            return TextToVideoPipeline.from_pretrained(REAL_CHECKPOINT, torch_dtype=dtype, variant=variant), \
                f"{REAL_CHECKPOINT} ({dtype})"
        except (OSError, ValueError) as e:
            print(f"t2vlab: the real checkpoint is not available ({e}); using the embedded toy one", file=sys.stderr)
    name = args.model or "toy"
    pipe = TextToVideoPipeline.from_pretrained(name, torch_dtype=dtype,
                                               variant=None if name in EMBEDDED_CHECKPOINTS else variant)
    what = {"toy": "the embedded toy checkpoint (trained on coloured shapes: try 'a red circle moving left'; "
                   "it draws the colour and the direction of motion it is asked for)",
            "tiny": "the embedded tiny checkpoint (random weights: the video is noise)"}.get(name, name)
    return pipe, what


def main(argv=None):
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:  # say so before minutes of generation, not after
        print(f"t2vlab: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    import torch

    from . import export_to_video
    from .schedulers import from_name

    pipe, what = load(args)
    print(f"t2vlab: model {what}")
    tiny = pipe.unet.num_parameters() < 10_000_000
    steps = args.steps or (10 if pipe.name_or_path == "tiny" else 25)
    num_frames = args.frames or (8 if tiny else 16)
    pipe.scheduler = from_name(args.scheduler, pipe.scheduler.config)
    if args.offload:
        pipe.enable_model_cpu_offload()
    elif torch.cuda.is_available():
        pipe.to("cuda")
    if args.vae_slicing:
        pipe.enable_vae_slicing()
    t0 = time.perf_counter()
    frames = pipe(args.prompt, negative_prompt=args.negative, num_inference_steps=steps, num_frames=num_frames,
                  height=args.size, width=args.size, guidance_scale=args.guidance,
                  generator=torch.Generator().manual_seed(args.seed)).frames
    path = export_to_video(frames[0], args.out, fps=args.fps, overwrite=args.overwrite)
    f, h, w = frames.shape[1:4]
    print(f"t2vlab: wrote {path}: {f} frames of {w}x{h}, {steps} {args.scheduler} steps, "
          f"seed {args.seed}, in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
