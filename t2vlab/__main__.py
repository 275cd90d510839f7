"""t2vlab "a prompt" --out video.mp4 — generate one video from the command line.

``t2vlab`` is the console script that ``pip install`` puts on the PATH (``[project.scripts]``); ``python -m t2vlab``
is the same program. Each command has its ``--help``.

python -m t2vlab batch PROMPTS --out DIR [--model ...] [options] — one video per line of a prompts file
(text or JSON lines), resumable, shared between processes under ``accelerate launch`` (``t2vlab.batch``).

python -m t2vlab convert ORIGINAL_FOLDER OUT_FOLDER [--fp16] [--overwrite] — write a checkpoint in the
original ModelScope layout (configuration.json + .pth/.bin files) once in the published layout
(safetensors), which loads in seconds in t2vlab and in diffusers.

python -m t2vlab finetune --data CLIPS --out DIR [...] — train a LoRA on your own captioned clips
(``t2vlab.finetune``; ``python -m t2vlab finetune --help``).

python -m t2vlab distill --out DIR [...] — distil a model into a LoRA that samples in 4 steps (``t2vlab.distill``).

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

    python -m t2vlab "prompt" --video IN.mp4 --strength 0.6            restyle a clip (video-to-video)
    python -m t2vlab "prompt" --image first.png                        start from a still image
    python -m t2vlab "prompt" --model A --upscale-with B [--upscale-size WxH] [--upscale-strength 0.6]

Directing a video (``t2vlab.techniques``: keyframes, continuation, in-between frames, loops):

    python -m t2vlab "prompt" --keyframe 0=first.png --keyframe 7=last.png [--keyframe-strength 0.8]
    python -m t2vlab "prompt" --keyframe 0=first.png --keyframe 7=last.png --scheduler ddim --keyframe-resample 3
    python -m t2vlab "prompt" --extend IN.gif --overlap 4 [--frames 8]       IN followed by the new frames
    python -m t2vlab "prompt" --interpolate IN.gif --factor 2               F frames -> (F - 1) x 2 + 1
    python -m t2vlab "a (red:1.4) circle" --prompt-syntax a1111 --loop

The last is the "hi-res fix": generate with A, resize the frames, re-denoise them with B. A is
released (moved off the GPU and dropped) before B is loaded, so the two UNets are never on the GPU
together; with --offload each model is on the GPU only while it runs anyway.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch

from .batch import FPS, add_lora_arguments, batch
from .checks import cli, integer, number, positive_int, seed
from .compiled import COMPILE_MODES
from .distill import main as distill_main
from .finetune import main as finetune_main
from .guards import check_strength
from .lora_loading import load_adding_guidance_embedding
from .original import convert_original
from .os_errors import explain
from .pipeline import TextToVideoPipeline
from .schedulers import SCHEDULER_NAMES, from_name
from .techniques.prompt_weighting import SYNTAXES
from .video import export_to_video, inspect_video_file, open_image
from .video_to_video import VideoToVideoPipeline, resize_video
from .weights import REAL_CHECKPOINT


def size_arg(text):
    """'WxH' (width first, as video tools write it) -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1024x576, got {text!r}") from None
    try:
        return positive_int("width", w), positive_int("height", h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}") from None


COMMANDS = """commands (each with --help):
  t2vlab PROMPT [options]          generate a video (these options)
  t2vlab batch PROMPTS --out DIR   one video per line of a prompts file, resumable, shared between processes
  t2vlab finetune --data CLIPS ... train a LoRA on your own captioned clips
  t2vlab convert ORIGINAL OUT      write a checkpoint in the original ModelScope layout in the published one
python -m t2vlab is the same program; a prompt that is one of these words: t2vlab -- batch"""


def keyframe_arg(text):
    """--keyframe's FRAME=IMAGE -> (frame index, picture path)."""
    frame, sep, path = text.partition("=")
    try:
        index = integer("FRAME", int(frame), low=0)
    except ValueError:
        index = None
    if not sep or not path or index is None:
        raise argparse.ArgumentTypeError(f"expected FRAME=IMAGE with FRAME a frame index >= 0, such as 0=first.png, "
                                         f"got {text!r}")
    return index, path


def given(value, default):
    """A flag's value, or ``default`` when it was not given (None): never ``value or default``, which would
    silently turn a 0 into the default."""
    return default if value is None else value


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="t2vlab", description="Generate a video from a text prompt.", epilog=COMMANDS,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", help="what the video should show")
    ap.add_argument("--out", default="video.mp4", help="output file, .mp4 or .gif (default: video.mp4)")
    ap.add_argument("--model", default=None,
                    help="checkpoint folder (published or original ModelScope layout), Hub id, 'toy' or 'tiny' "
                         "(default: the real one on a GPU, else toy)")
    ap.add_argument("--negative", default=None, help="negative prompt")
    ap.add_argument("--steps", type=cli(positive_int), default=None,
                    help="denoising steps (default: the checkpoint's, 25)")
    ap.add_argument("--frames", type=cli(positive_int), default=None,
                    help="number of frames (default: the checkpoint's: 16, toy 8)")
    ap.add_argument("--size", type=cli(positive_int), default=None,
                    help="height and width in pixels (default: the model's)")
    ap.add_argument("--seed", type=cli(seed), default=0, help="seed of the noise, 0 to 2^64-1 (default 0)")
    ap.add_argument("--guidance", type=cli(number, float, low=0), default=None,
                    help="classifier-free guidance scale (default 9)")
    ap.add_argument("--scheduler", default=None, choices=SCHEDULER_NAMES, help="sampler (default dpm++)")
    ap.add_argument("--fps", type=FPS, default=8, help="frames per second of the file (default 8)")
    ap.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    ap.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    ap.add_argument("--offload", action="store_true", help="keep models on the CPU until each runs (GPU)")
    ap.add_argument("--vae-slicing", action="store_true", help="encode and decode one frame at a time")
    ap.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES, metavar="MODE",
                    help="torch.compile the UNet and the VAE decoder (MODE: default, reduce-overhead (CUDA graphs), "
                         "max-autotune); the first call compiles, and its time is printed")
    ap.add_argument("--deepcache", nargs="?", type=cli(positive_int), const=3, default=None, metavar="INTERVAL",
                    help="DeepCache: run the deep levels of the UNet every INTERVAL steps only (default 3)")
    ap.add_argument("--free-noise", nargs="?", type=cli(positive_int), const=True, default=None, metavar="CONTEXT",
                    help="FreeNoise for long videos: windows of CONTEXT frames (default: the model's clip length)")
    ap.add_argument("--free-init", type=cli(positive_int), default=None, metavar="N",
                    help="FreeInit: N sampling passes")
    ap.add_argument("--freeu", action="store_true", help="FreeU (s1 0.9, s2 0.2, b1 1.2, b2 1.4)")
    ap.add_argument("--prompt-at", nargs=2, action="append", default=[], metavar=("FRAME", "TEXT"),
                    help="prompt travel: from FRAME on, travel towards TEXT (repeatable)")
    ap.add_argument("--video", default=None, help="restyle this video file (video-to-video) instead of generating")
    ap.add_argument("--strength", type=float, default=0.6,
                    help="with --video: how much of the noise schedule to rerun, in (0, 1] (default 0.6)")
    ap.add_argument("--image", default=None, help="start the video from this image (image-to-video)")
    ap.add_argument("--image-strength", type=float, default=1.0,
                    help="with --image: how firmly the first frame is held to the image, in [0, 1] (default 1)")
    ap.add_argument("--keyframe", type=keyframe_arg, action="append", default=[], metavar="FRAME=IMAGE",
                    help="hold frame FRAME (from 0) to the picture IMAGE (repeatable); the video takes the pictures' "
                         "size unless --size")
    ap.add_argument("--keyframe-strength", type=cli(number, float, low=0, high=1), default=None, metavar="S",
                    help="how firmly the held frames (--keyframe, --extend, --interpolate) follow theirs, in [0, 1] "
                         "(default 1: they are the given frames)")
    ap.add_argument("--keyframe-schedule", type=cli(number, float, low=0, high=1, low_open=True), default=None,
                    metavar="R", help="hold them over the first R of the steps only, in (0, 1], then let go "
                                      "(default: to the end)")
    ap.add_argument("--keyframe-resample", type=cli(positive_int), default=None, metavar="U",
                    help="take each step U times, noised back between, so the other frames agree with the held ones "
                         "(RePaint's resampling; about U x the UNet calls; needs --scheduler ddim or ddpm; default 1)")
    ap.add_argument("--extend", default=None, metavar="VIDEO",
                    help="continue this video file with a chunk of --frames frames whose first --overlap are its last "
                         "ones; the output is VIDEO followed by the new frames")
    ap.add_argument("--overlap", type=cli(positive_int), default=None, metavar="N",
                    help="with --extend: how many of the video's last frames the chunk starts from (default: half the "
                         "chunk)")
    ap.add_argument("--interpolate", default=None, metavar="VIDEO",
                    help="in-between frames: this video file's F frames held every --factor-th frame of a video of "
                         "(F - 1) x factor + 1, the model drawing the rest")
    ap.add_argument("--factor", type=cli(integer, low=2), default=None, metavar="N",
                    help="with --interpolate: frames per given frame, an integer >= 2 (default 2)")
    ap.add_argument("--prompt-syntax", default="plain", choices=SYNTAXES,
                    help="how the prompt is read: plain text (default), a1111 '(word:1.3) [word]', "
                         "compel 'word+ (words)1.3'")
    ap.add_argument("--loop", action="store_true", help="a video whose last frame flows into its first")
    add_lora_arguments(ap, "this video")
    ap.add_argument("--upscale-with", default=None, metavar="MODEL",
                    help="then resize the frames and re-denoise them with this checkpoint (the hi-res fix)")
    ap.add_argument("--upscale-size", type=size_arg, default=None, metavar="WxH",
                    help="frame size for --upscale-with (default: the upscaler's size, keeping the aspect ratio)")
    ap.add_argument("--upscale-strength", type=float, default=0.6, help="strength of the upscale pass (default 0.6)")
    args = ap.parse_args(argv)
    steps = given(args.steps, 25)
    for flag, value, used in (("--strength", args.strength, args.video),
                              ("--upscale-strength", args.upscale_strength, args.upscale_with)):
        try:  # always in (0, 1]; whether it leaves a step matters only with --video / --upscale-with
            check_strength(value, steps if used else None, flag)
        except ValueError as e:
            ap.error(str(e))
    try:
        args.keyframes = {integer("--prompt-at FRAME", int(frame), low=0): text for frame, text in args.prompt_at}
    except ValueError:
        ap.error(f"--prompt-at: FRAME must be a frame index >= 0, got {[f for f, _ in args.prompt_at]}")
    try:
        check_combinations(args)
        if args.frames is not None:  # else the checkpoint's clip length decides, known once it is loaded
            check_frames(args, args.frames)
    except ValueError as e:
        ap.error(str(e))
    return args


def sources_of(args) -> list[str]:
    """The flags that say what the video starts from (at most one may be given)."""
    return [flag for flag, value in (("--video", args.video), ("--image", args.image), ("--keyframe", args.keyframe),
                                     ("--extend", args.extend), ("--interpolate", args.interpolate)) if value]


def check_combinations(args):
    """The flags that make sense together (ValueError naming the flag), and the files they name there: one way
    of starting the video; the options of --extend, --interpolate and the held frames only with them."""
    sources = sources_of(args)
    if len(sources) > 1:
        hint = " (--image IMAGE is --keyframe 0=IMAGE)" if sources == ["--image", "--keyframe"] else ""
        raise ValueError(f"{' and '.join(sources)}: pass one; each decides what the video starts from{hint}")
    source = sources[0] if sources else None
    continuing = source in ("--video", "--extend", "--interpolate")  # the frames come from a video file
    if args.loop and continuing:
        raise ValueError(f"--loop: only when generating; {source}'s video keeps its own start and end")
    for flag, value, needs in (("--overlap", args.overlap, "--extend"), ("--factor", args.factor, "--interpolate")):
        if value is not None and source != needs:
            raise ValueError(f"{flag}: only with {needs}")
    for flag, value in (("--keyframe-strength", args.keyframe_strength),
                        ("--keyframe-schedule", args.keyframe_schedule)):
        if value is not None and source not in ("--keyframe", "--extend", "--interpolate"):
            hint = "; with --image, --image-strength" if source == "--image" else ""
            raise ValueError(f"{flag}: only with --keyframe, --extend or --interpolate{hint}")
    check_resample(args, source)
    if source in ("--extend", "--interpolate"):
        for flag, value in (("--size", args.size), ("--prompt-at", args.prompt_at)):
            if value:
                why = "the video's own size" if flag == "--size" else "one prompt, the positional one"
                raise ValueError(f"{flag}: not with {source}, which takes {why}")
    if source == "--interpolate" and args.frames is not None:
        raise ValueError("--frames: not with --interpolate, which makes (F - 1) x --factor + 1 frames of F given")
    if args.free_init is not None and source in ("--image", "--keyframe", "--extend", "--interpolate"):
        raise ValueError(f"--free-init: FreeInit's re-noised passes and {source}'s held frames do not combine")
    frames = [f for f, _ in args.keyframe]
    twice = sorted({f for f in frames if frames.count(f) > 1})
    if twice:
        raise ValueError(f"--keyframe: frame {twice[0]} given twice")
    files = [("--video", args.video), ("--image", args.image), ("--extend", args.extend),
             ("--interpolate", args.interpolate), *((f"--keyframe {f}={p}", p) for f, p in args.keyframe)]
    for flag, path in files:
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{flag}: no such file {path!r}")


def check_resample(args, source):
    """--keyframe-resample: with held frames (--image's too), and above 1 a sampler that can take a step again."""
    passes = args.keyframe_resample
    if passes is None:
        return
    if source not in ("--image", "--keyframe", "--extend", "--interpolate"):
        raise ValueError("--keyframe-resample: only with --keyframe, --image, --extend or --interpolate (it lets the "
                         "other frames agree with the held ones)")
    if passes > 1 and args.scheduler is None:
        raise ValueError(f"--keyframe-resample {passes}: add --scheduler ddim (or ddpm), a sampler that can take a "
                         f"step again (without --scheduler the checkpoint's own is used: the toy's dpm++ cannot)")
    if passes > 1 and args.scheduler not in ("ddim", "ddpm"):
        raise ValueError(f"--keyframe-resample {passes}: --scheduler {args.scheduler} keeps state between steps (its "
                         f"last model outputs or a step counter), so a step cannot be taken again; use --scheduler "
                         f"ddim (or ddpm)")


def check_frames(args, frames):
    """The held frames against the number of frames the model samples (--frames, else the checkpoint's): each
    --keyframe inside the video, --extend's --overlap smaller than its chunk."""
    for f, path in args.keyframe:
        if f >= frames:
            raise ValueError(f"--keyframe {f}={path}: frame {f} is outside the video's {frames} frames (0 to "
                             f"{frames - 1}; --frames sets how many)")
    if args.extend and args.overlap is not None and args.overlap >= frames:
        raise ValueError(f"--overlap {args.overlap}: must be smaller than the chunk of {frames} frames (--frames), "
                         f"which adds --frames - --overlap new frames to the video")


def prompt_of(args):
    """The positional prompt, or with --prompt-at a dict {frame: text} with the positional prompt at frame 0."""
    return {0: args.prompt, **args.keyframes} if args.keyframes else args.prompt


def lora_source(text):
    """--lora's SOURCE as load_lora_weights takes it: (path or Hub id, subfolder). A path that exists is a path;
    otherwise owner/name/sub/folder is the Hub repository owner/name and its subfolder sub/folder."""
    if os.path.exists(text) or text.count("/") < 2:
        return text, None
    owner, name, subfolder = text.split("/", 2)
    return f"{owner}/{name}", subfolder


def load_loras(pipe, args):
    """--lora: each source loaded as its own adapter, in the order given (LoRAError, a ValueError, names a bad one).
    T2V-Turbo's list file first gives the UNet its guidance embedding (``lora_loading.load_adding_guidance_embedding``),
    said once."""
    for text in args.lora:
        source, subfolder = lora_source(text)
        name, added = load_adding_guidance_embedding(pipe, source, subfolder=subfolder,
                                                     weight_name=args.lora_weight_name)
        if added:
            width = pipe.unet.time_embedding.cond_proj.out_features
            print(f"t2vlab: {text} is made for a UNet with a guidance embedding: gave this one "
                  f"time_embedding.cond_proj ({added} -> {width}, drawn from seed 0; the file holds only its LoRA)")
        print(f"t2vlab: LoRA {text} loaded as adapter {name!r}")


def load_with_loras(args, model=None):
    """``load``, then --lora's adapters (batch's way of loading: its errors are messages there)."""
    pipe = load(args, model)
    load_loras(pipe, args)
    return pipe


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
    if args.deepcache is not None:
        pipe.enable_deepcache(cache_interval=args.deepcache)


def compile_and_warm_up(pipe, args, height, width, frames, guidance):
    """With --compile: compile, then one call at the generation's shapes (when known here), its time printed."""
    if args.compile is None:
        return
    pipe.compile(mode=args.compile)
    if height is None:  # the shapes come from a video or image file: the loop's first call compiles
        return
    seconds = pipe.warm_up(height, width, frames, guidance_scale=guidance)
    print(f"t2vlab: compiled ({args.compile}); first UNet call {seconds['unet']:.1f} s, "
          f"first decode {seconds['vae']:.1f} s")


def load(args, model=None, cls=TextToVideoPipeline):
    """The pipeline the arguments ask for: the real model in fp16 on a GPU unless --model names another;
    a checkpoint without an fp16 variant (toy, tiny) is cast (see t2vlab.weights)."""
    gpu = torch.cuda.is_available()
    dtype = torch.float16 if gpu and (args.fp16 or model is None) else torch.float32
    variant = "fp16" if dtype == torch.float16 else None
    if model is None and gpu:
        try:
            return cls.from_pretrained(REAL_CHECKPOINT, torch_dtype=dtype, variant=variant)
        except (OSError, ValueError) as e:
            print(f"t2vlab: the real checkpoint is not available ({e}); using the embedded toy one", file=sys.stderr)
    return cls.from_pretrained(model or "toy", torch_dtype=dtype, variant=variant)


def parse_convert_args(argv):
    ap = argparse.ArgumentParser(prog="t2vlab convert", description=(
        "Convert a checkpoint in the original ModelScope layout (configuration.json, text2video_pytorch_model.pth, "
        "VQGAN_autoencoder.pth, open_clip_pytorch_model.bin) to the published layout (safetensors)."))
    ap.add_argument("original", help="folder in the original layout")
    ap.add_argument("out", help="folder to write (must not exist unless --overwrite)")
    ap.add_argument("--fp16", action="store_true", help="write float16 weights (half the size)")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace OUT if it exists and t2vlab wrote it (a folder holding .t2vlab-written)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def error_message(e: BaseException) -> str:
    """What the commands print for an error: an OSError in the words of ``t2vlab.os_errors``, else its own."""
    return explain(e) if isinstance(e, OSError) and e.errno is not None else str(e)


def convert(argv):
    args = parse_convert_args(argv)
    t0 = time.perf_counter()

    def say(message):
        print(f"t2vlab convert: {message}", file=sys.stderr)

    try:
        out = convert_original(args.original, args.out, fp16=args.fp16, overwrite=args.overwrite,
                               progress=not args.quiet, say=say)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError; FileExistsError, a full disk: OSError
        say(error_message(e))
        return 2
    print(f"t2vlab: wrote {out} ({'float16' if args.fp16 else 'float32'}) in {time.perf_counter() - t0:.1f} s; "
          f"load it with --model {out}")
    return 0


def prepare(pipe, args):
    """Sampler, placement (GPU, or offload) and VAE slicing as the arguments ask; returns (steps, sampler)."""
    rec = pipe.recommended
    print(f"t2vlab: model {pipe.name_or_path}: {rec.description}")
    steps, scheduler = given(args.steps, rec.num_inference_steps), given(args.scheduler, rec.scheduler)
    pipe.scheduler = from_name(scheduler, pipe.scheduler.config)
    if args.offload:
        pipe.enable_model_cpu_offload()
    elif torch.cuda.is_available():
        pipe.to("cuda")
    if args.vae_slicing:
        pipe.enable_vae_slicing()
    return steps, scheduler


def release(pipe):
    """Take a pipeline's models off the GPU and drop what the caller lets go of."""
    pipe.to("cpu")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def upscale_size(frames, upscaler, size=None):
    """(height, width) of the upscale pass: ``size`` (width, height) if given, else the upscaler's trained
    size along the longer side, keeping the frames' aspect ratio, in multiples of its VAE's factor."""
    if size is not None:
        return size[1], size[0]
    h, w = frames.shape[2:4]
    rec, f = upscaler.recommended, upscaler.vae.spatial_factor
    scale = max(rec.height, rec.width) / max(h, w)
    return max(round(h * scale / f), 1) * f, max(round(w * scale / f), 1) * f


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:  # a prompt that is the word "convert": python -m t2vlab -- convert
        return convert(argv[1:])
    if argv[:1] == ["finetune"]:  # LoRA fine-tuning on your clips (t2vlab.finetune)
        return finetune_main(argv[1:])
    if argv[:1] == ["distill"]:  # consistency distillation into a few-step LoRA (t2vlab.distill)
        return distill_main(argv[1:])
    if argv[:1] == ["batch"]:  # (a prompt that is the word "batch": python -m t2vlab -- batch)
        return batch(argv[1:], load_with_loras, prepare)
    args = parse_args(argv)
    try:  # say so before minutes of generation, not after
        check_files(args)
    except (OSError, ValueError) as e:
        print(f"t2vlab: {error_message(e)}", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(args.seed)
    pipe = load(args, args.model, VideoToVideoPipeline if args.video else TextToVideoPipeline)
    try:  # before prepare: a known few-step adapter changes the recommended sampler, steps and guidance
        load_loras(pipe, args)
    except (ValueError, OSError) as e:
        print(f"t2vlab: --lora: {error_message(e)}", file=sys.stderr)
        return 2
    steps, scheduler = prepare(pipe, args)
    guidance = pipe.recommended.guidance_scale if args.guidance is None else args.guidance
    t0 = time.perf_counter()
    try:
        check_frames(args, given(args.frames, pipe.recommended.num_frames))  # (as parse_args does with --frames)
        switch_on(pipe, args)
        on = techniques_on(pipe, args)
        compile_and_warm_up(pipe, args, *shapes_to_compile_for(pipe, args), guidance)
        frames = generate(pipe, args, steps, guidance, generator)
        if args.upscale_with:
            release(pipe)
            del pipe  # the first model leaves before the second arrives: never two UNets on the GPU
            frames, scheduler = hi_res_fix(frames, args, generator)
        path = export_to_video(frames[0], args.out, fps=args.fps, overwrite=args.overwrite)
    except (ValueError, OSError) as e:  # bad input, named by the pipeline before any model ran; a full disk
        print(f"t2vlab: {error_message(e)}", file=sys.stderr)
        return 2
    f, h, w = frames.shape[1:4]
    how = f" at strength {args.strength} (the last {int(steps * args.strength)})" if args.video else ""
    print(f"t2vlab: wrote {path}: {f} frames of {w}x{h}, {steps} {scheduler} steps{how}, "
          f"seed {args.seed}{', ' + ', '.join(on) if on else ''}, in {time.perf_counter() - t0:.1f} s")
    return 0


def check_files(args):
    """What can be known about the files before any model loads: --out (not there unless --overwrite, a file
    name in an existing folder), --video, --extend, --interpolate, --image and --keyframe's pictures looked at
    (declared size and frames within the readers' limits, not truncated; the pictures all of the video's size;
    enough frames for --overlap and --interpolate) without decoding them."""
    if os.path.isdir(args.out):
        raise IsADirectoryError(f"--out {args.out} is a folder; give a file name such as {args.out}/video.mp4")
    if os.path.lexists(args.out) and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--out {args.out}: there is no folder {folder} to write it in")
    for flag, path in (("--video", args.video), ("--extend", args.extend), ("--interpolate", args.interpolate)):
        if path is not None:
            frames = readable(inspect_video_file, path, flag)[0]
            check_video_frames(args, flag, frames)
    if args.image is not None:
        readable(open_image, args.image, "--image").close()
    sizes = {}  # the keyframe pictures' (height, width): all the video's
    for f, path in args.keyframe:
        with readable(open_image, path, f"--keyframe {f}={path}") as img:
            sizes[f"--keyframe {f}={path}"] = img.size[::-1]
    check_keyframe_sizes(sizes, args.size)


def readable(look, path, flag):
    """``look(path, flag)`` (a header read), a file that is not a video or image at all said so in the flag's name
    (the pipeline would say the same, later)."""
    try:
        return look(path, flag)
    except OSError as e:
        raise ValueError(f"{flag}: cannot read {path!r} ({str(e).splitlines()[0]})") from e


def check_video_frames(args, flag, frames):
    """--extend's --overlap and --interpolate's two frames against the frames the file declares (None: unknown)."""
    if frames is None:
        return
    if flag == "--extend" and args.overlap is not None and args.overlap > frames:
        raise ValueError(f"--overlap {args.overlap}: {args.extend} has only {frames} frame(s) to continue from")
    if flag == "--interpolate" and frames < 2:
        raise ValueError(f"--interpolate: {args.interpolate} has {frames} frame; in-between frames need two or more")


def check_keyframe_sizes(sizes, size=None):
    """The keyframe pictures ({flag: (height, width)}) are all the video's size: --size x --size when given, else
    the first one's (the pipeline's rule: it takes its size from the first keyframe, and resizes nothing)."""
    if not sizes:
        return
    first = next(iter(sizes))
    want, why = ((size, size), "--size") if size is not None else (sizes[first], f"the first, {first}")
    for flag, (h, w) in sizes.items():
        if (h, w) != want:
            raise ValueError(f"{flag}: the picture is {h}x{w} pixels (height x width) but the video is "
                             f"{want[0]}x{want[1]} ({why}); resize the pictures to one size"
                             f"{', or leave --size out' if size is not None else ''}")


def techniques_on(pipe, args) -> list[str]:
    """The names of what is switched on, for the summary line."""
    return [name for name, used in (("FreeNoise", pipe.free_noise), ("FreeInit", pipe.free_init),
                                    ("FreeU", pipe.unet.freeu_enabled), ("prompt travel", args.keyframes),
                                    ("DeepCache", pipe.unet.deepcache), ("compiled", args.compile),
                                    ("loop", args.loop), (f"{len(args.lora)} LoRA", args.lora),
                                    (f"{len(args.keyframe)} keyframe(s)", args.keyframe),
                                    (f"RePaint's resampling x{args.keyframe_resample}",
                                     (args.keyframe_resample or 1) > 1),
                                    (f"continuing {args.extend}", args.extend),
                                    (f"in-between frames x{given(args.factor, 2)}", args.interpolate),
                                    (f"{args.prompt_syntax} prompt syntax", args.prompt_syntax != "plain")) if used]


def shapes_to_compile_for(pipe, args):
    """(height, width, frames) of the generation for --compile's warm-up; height None when a video or image
    file decides the size (or the number of frames)."""
    rec = pipe.recommended
    known = not sources_of(args)
    return (given(args.size, rec.height) if known else None, given(args.size, rec.width),
            given(args.frames, rec.num_frames))


def generate(pipe, args, steps, guidance, generator):
    """The video the arguments ask for: restyled from --video, continued from --extend's, --interpolate's with
    in-between frames, or generated (through --keyframe's pictures, from --image's first frame)."""
    rec = pipe.recommended
    common = dict(negative_prompt=args.negative, num_inference_steps=steps, guidance_scale=guidance,
                  generator=generator, prompt_syntax=args.prompt_syntax, **lora_scale(args))
    resample = dict(keyframe_resample=given(args.keyframe_resample, 1))
    held = dict(keyframe_strength=given(args.keyframe_strength, 1.0), keyframe_schedule=args.keyframe_schedule,
                **resample)
    if args.video:
        return pipe(args.prompt, video=args.video, strength=args.strength, **common).frames
    if args.extend:  # the file's frames, then the chunk's new ones
        return pipe.extend(args.extend, args.prompt, num_frames=given(args.frames, rec.num_frames),
                           overlap=args.overlap, **held, **common).frames
    if args.interpolate:
        return pipe.interpolate(args.interpolate, args.prompt, factor=given(args.factor, 2), **held, **common).frames
    size = ({} if (args.image or args.keyframe) and args.size is None else  # the pictures' size
            {"height": given(args.size, rec.height), "width": given(args.size, rec.width)})
    keyframes = dict(keyframes=dict(args.keyframe), **held) if args.keyframe else {}
    return pipe(prompt_of(args), num_frames=given(args.frames, rec.num_frames), image=args.image,
                image_strength=args.image_strength, loop=args.loop, **keyframes, **size, **common,
                **(resample if args.image else {})).frames


def lora_scale(args):
    """--lora-scale as the pipelines take it (diffusers' cross_attention_kwargs); nothing when it is 1."""
    return {} if args.lora_scale == 1.0 else {"cross_attention_kwargs": {"scale": args.lora_scale}}


def hi_res_fix(frames, args, generator):
    """--upscale-with: the frames resized to the upscaler's size and re-denoised by it (video-to-video at
    --upscale-strength). The first model must be released before (``release``). Returns (frames, its sampler)."""
    big = load(args, args.upscale_with, VideoToVideoPipeline)
    steps, scheduler = prepare(big, args)
    height, width = upscale_size(frames, big, args.upscale_size)
    guidance = big.recommended.guidance_scale if args.guidance is None else args.guidance
    print(f"t2vlab: upscaling to {width}x{height} with {args.upscale_with}, strength {args.upscale_strength}")
    frames = big(args.prompt, video=resize_video(frames, height, width), strength=args.upscale_strength,
                 negative_prompt=args.negative, num_inference_steps=steps, guidance_scale=guidance,
                 generator=generator, prompt_syntax=args.prompt_syntax).frames
    return frames, scheduler


if __name__ == "__main__":
    sys.exit(main())
