"""python -m t2vlab "a prompt" --out video.mp4 — generate one video from the command line.

python -m t2vlab convert ORIGINAL_FOLDER OUT_FOLDER [--fp16] [--overwrite] — write a checkpoint in the
original ModelScope layout (configuration.json + .pth/.bin files) once in the published layout
(safetensors), which loads in seconds in t2vlab and in diffusers.

Without --model: the real checkpoint (damo-vilab/text-to-video-ms-1.7b, fp16) when a CUDA GPU is
present and the weights can be had (downloaded or in the Hub cache), else the embedded toy one: a
tiny model of the same architecture that t2vlab trained on coloured shapes ("a red circle moving
left"; it draws the colour and the direction it is asked for). 'tiny' is the same size with random
weights (its videos are noise). It always says which it used. Frames, size and steps default to
the settings the checkpoint is meant for (``pipe.recommended``).

Long videos and training-free quality: ``--free-noise [CONTEXT]`` (FreeNoise; CONTEXT defaults to the
checkpoint's clip length), ``--free-init N`` (FreeInit, N passes), ``--freeu`` (FreeU with the values
diffusers documents for ms-1.7b), and prompt travel with ``--prompt-at FRAME "text"`` (repeatable;
the positional prompt is frame 0's text):

    python -m t2vlab "a red square moving right" --prompt-at 16 "a blue square moving right" \
        --frames 24 --free-noise
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from .checkpoint import CheckpointError
from .original import convert_original
from .pipeline import TextToVideoPipeline
from .schedulers import SCHEDULER_NAMES, from_name
from .video import export_to_video
from .weights import REAL_CHECKPOINT


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m t2vlab", description="Generate a video from a text prompt.")
    ap.add_argument("prompt", help="what the video should show")
    ap.add_argument("--out", default="video.mp4", help="output file, .mp4 or .gif (default: video.mp4)")
    ap.add_argument("--model", default=None,
                    help="checkpoint folder (published or original ModelScope layout), Hub id, 'toy' or 'tiny' "
                         "(default: the real one on a GPU, else toy)")
    ap.add_argument("--negative", default=None, help="negative prompt")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the checkpoint's, 25)")
    ap.add_argument("--frames", type=int, default=None, help="number of frames (default: the checkpoint's: 16, toy 8)")
    ap.add_argument("--size", type=int, default=None, help="height and width in pixels (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 9)")
    ap.add_argument("--scheduler", default=None, choices=SCHEDULER_NAMES, help="sampler (default dpm++)")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ap.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    ap.add_argument("--offload", action="store_true", help="keep models on the CPU until each runs (GPU)")
    ap.add_argument("--vae-slicing", action="store_true", help="decode one frame at a time")
    ap.add_argument("--free-noise", nargs="?", type=int, const=True, default=None, metavar="CONTEXT",
                    help="FreeNoise for long videos: windows of CONTEXT frames (default: the model's clip length)")
    ap.add_argument("--free-init", type=int, default=None, metavar="N", help="FreeInit: N sampling passes")
    ap.add_argument("--freeu", action="store_true", help="FreeU (s1 0.9, s2 0.2, b1 1.2, b2 1.4)")
    ap.add_argument("--prompt-at", nargs=2, action="append", default=[], metavar=("FRAME", "TEXT"),
                    help="prompt travel: from FRAME on, travel towards TEXT (repeatable)")
    args = ap.parse_args(argv)
    try:
        args.keyframes = {int(frame): text for frame, text in args.prompt_at}
    except ValueError:
        ap.error(f"--prompt-at: FRAME must be an integer frame index, got {[f for f, _ in args.prompt_at]}")
    return args


def prompt_of(args):
    """The positional prompt, or with --prompt-at a dict {frame: text} with the positional prompt at frame 0."""
    return {0: args.prompt, **args.keyframes} if args.keyframes else args.prompt


def switch_on(pipe, args):
    """FreeNoise, FreeInit and FreeU as the arguments ask (ValueError naming a bad value)."""
    if args.free_noise is not None:
        context = pipe.recommended.num_frames if args.free_noise is True else args.free_noise
        stride = max(1, context // 4)  # diffusers' default: windows of 16, 4 apart
        pipe.enable_free_noise(context_length=context, context_stride=stride)
    if args.free_init is not None:
        pipe.enable_free_init(num_iters=args.free_init)
    if args.freeu:
        pipe.enable_freeu()


def load(args):
    """The pipeline the arguments ask for: the real model in fp16 on a GPU unless --model names another;
    a checkpoint without an fp16 variant (toy, tiny) is cast (see t2vlab.weights)."""
    gpu = torch.cuda.is_available()
    dtype = torch.float16 if gpu and (args.fp16 or args.model is None) else torch.float32
    variant = "fp16" if dtype == torch.float16 else None
    if args.model is None and gpu:
        try:
            return TextToVideoPipeline.from_pretrained(REAL_CHECKPOINT, torch_dtype=dtype, variant=variant)
        except (OSError, ValueError) as e:
            print(f"t2vlab: the real checkpoint is not available ({e}); using the embedded toy one", file=sys.stderr)
    return TextToVideoPipeline.from_pretrained(args.model or "toy", torch_dtype=dtype, variant=variant)


def parse_convert_args(argv):
    ap = argparse.ArgumentParser(prog="python -m t2vlab convert", description=(
        "Convert a checkpoint in the original ModelScope layout (configuration.json, text2video_pytorch_model.pth, "
        "VQGAN_autoencoder.pth, open_clip_pytorch_model.bin) to the published layout (safetensors)."))
    ap.add_argument("original", help="folder in the original layout")
    ap.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    ap.add_argument("--fp16", action="store_true", help="write float16 weights (half the size)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def convert(argv):
    args = parse_convert_args(argv)
    t0 = time.perf_counter()
    try:
        out = convert_original(args.original, args.out, fp16=args.fp16, overwrite=args.overwrite,
                               progress=not args.quiet)
    except (FileExistsError, FileNotFoundError, CheckpointError) as e:
        print(f"t2vlab convert: {e}", file=sys.stderr)
        return 2
    print(f"t2vlab: wrote {out} ({'float16' if args.fp16 else 'float32'}) in {time.perf_counter() - t0:.1f} s; "
          f"load it with --model {out}")
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # a prompt that is the word "convert": python -m t2vlab -- convert
        return convert(argv[1:])
    args = parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:  # say so before minutes of generation, not after
        print(f"t2vlab: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    pipe = load(args)
    rec = pipe.recommended
    print(f"t2vlab: model {pipe.name_or_path}: {rec.description}")
    steps, scheduler = args.steps or rec.num_inference_steps, args.scheduler or rec.scheduler
    pipe.scheduler = from_name(scheduler, pipe.scheduler.config)
    if args.offload:
        pipe.enable_model_cpu_offload()
    elif torch.cuda.is_available():
        pipe.to("cuda")
    if args.vae_slicing:
        pipe.enable_vae_slicing()
    t0 = time.perf_counter()
    try:
        switch_on(pipe, args)
        frames = pipe(prompt_of(args), negative_prompt=args.negative, num_inference_steps=steps,
                      num_frames=args.frames or rec.num_frames, height=args.size or rec.height,
                      width=args.size or rec.width, guidance_scale=rec.guidance_scale if args.guidance is None else
                      args.guidance, generator=torch.Generator().manual_seed(args.seed)).frames
    except ValueError as e:  # a bad value (frames, --free-noise 0, --prompt-at 99 ...): say which, no traceback
        print(f"t2vlab: {e}", file=sys.stderr)
        return 2
    path = export_to_video(frames[0], args.out, fps=args.fps, overwrite=args.overwrite)
    f, h, w = frames.shape[1:4]
    on = [name for name, used in (("FreeNoise", pipe.free_noise), ("FreeInit", pipe.free_init),
                                  ("FreeU", pipe.unet.freeu_enabled), ("prompt travel", args.keyframes)) if used]
    print(f"t2vlab: wrote {path}: {f} frames of {w}x{h}, {steps} {scheduler} steps, "
          f"seed {args.seed}{', ' + ', '.join(on) if on else ''}, in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
