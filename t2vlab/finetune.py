"""Fine-tune the UNet on your own clips with LoRA: ``python -m t2vlab finetune --data FOLDER --out DIR``.

    python -m t2vlab finetune --data clips/ --out my-lora [--model ID_OR_PATH] [--lora-rank 16]
        [--train spatial|temporal|both] [--frames 16] [--size 256] [--steps 500] [--lr 1e-4] [--resume]
    accelerate launch --num_processes 2 -m t2vlab finetune ...     # data parallel, no code change

The data: a folder of clips (.mp4, .gif, or a folder of frames), each with a caption in a same-named .txt
(``cat.mp4`` + ``cat.txt``). Each clip is read once: ``--frames`` frames ``--stride`` apart from its start,
centre-cropped to a square and resized to ``--size``; then the VAE's latents and the text encoder's
embeddings are cached (``DIR/cache.safetensors``) and the two encoders are dropped from the GPU.

One step is the diffusion loss every text-to-video model is trained with, on the LoRA's parameters only:

    x0 = cached latents, eps ~ N(0, I), t ~ U{0..T-1}
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    loss = || unet_with_lora(x_t, t, text) - eps ||^2

``--train motion`` learns a motion alone, to move it to new subjects (MotionDirector: ``motion_director.py``
has its two paths and its appearance-debiased loss); the file written then holds only the temporal LoRA.

Everything random in a step (which clips, eps, t, which captions are dropped for guidance) is drawn from a
generator seeded by (``--seed``, step) for the whole global batch, and each process takes its share of
it: so ``--resume`` continues exactly as an uninterrupted run, and N processes with ``--batch-size`` B
compute the same step as one process with N*B. (For the same reason the UNet's own dropout is off.)

Out: ``DIR/pytorch_lora_weights.safetensors`` (diffusers' LoRA format: ``pipe.load_lora_weights(DIR)``),
``DIR/log.jsonl`` and ``DIR/loss.png``, ``DIR/samples/step-N.gif``, and the training states ``--resume``
continues from, ``DIR/training-states/state-N/`` (the LoRA and the optimizer after step N, each written whole
or not at all; the two newest are kept).
``accelerate`` is the engine: mixed precision (``--mixed-precision fp16|bf16``, fp16 with loss scaling),
gradient accumulation, and data-parallel processes under ``accelerate launch`` (on a machine without a GPU,
with the trainer's ``--cpu``: processes accelerate does not join into one job are stopped, ``t2vlab.launcher``).
A ``--resume`` must keep the settings its training state was made with (``RESUME_SETTINGS``); the log then
holds each step once. ``--out`` is a new or empty folder, or one this trainer wrote (never someone else's).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from tqdm.auto import tqdm

from . import atomic
from .atomic import atomic_file, atomic_folder, write_bytes, write_text
from .checks import MAX_SEED, cli, integer, number, positive_int, seed
from .guards import MAX_FRAMES, MAX_SIZE
from .inputs import image_input, video_input
from .launcher import LaunchError, check_processes
from .lora import (
    LORA_WEIGHT_NAME,
    TRAIN_CHOICES,
    adapter_config,
    add_lora,
    lora_state_dict,
    lora_targets,
    save_lora_file,
    set_active,
)
from .motion_director import APPEARANCE, MOTION, DualPath, add_adapters
from .os_errors import explain
from .pipeline import TextToVideoPipeline
from .schedulers import DDPMScheduler
from .video import VideoFileError, export_to_video

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ADAPTER = "finetune"  # the adapter's name while training (--train motion: motion_director's two)
STATES = "training-states"  # DIR/training-states/state-N/: what --resume continues from
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}  # --mixed-precision: the frozen UNet's dtype
APPEARANCE_WEIGHT_NAME = "appearance_lora.safetensors"  # --train motion: the spatial LoRA, to look at
# what a training state must agree on with the run that resumes it (anything else may change: --steps, --lr, ...)
RESUME_SETTINGS = ("train", "lora_rank", "lora_alpha", "feed_forward", "optimizer")


class DataError(ValueError):
    """A data folder or clip that cannot be trained on, naming the file."""


# ------------------------------------------------------------------------------------------- the data
@dataclass
class Clip:
    path: Path
    caption: str


def find_clips(folder, on_bad="stop") -> list[Clip]:
    """Every clip in ``folder`` with its caption; a clip without a .txt is an error (``on_bad="stop"``) or
    skipped with a warning naming it (``"skip"``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data {folder}: not a folder")
    clips = []
    for path in sorted(folder.iterdir()):
        is_frames = path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
        if not (is_frames or path.suffix.lower() in VIDEO_SUFFIXES) or path.name.startswith("."):
            continue
        txt = path.with_suffix(".txt") if path.is_file() else path.parent / (path.name + ".txt")
        if not txt.is_file():
            bad(on_bad, f"{path}: no caption (expected {txt.name} beside it)")
            continue
        clips.append(Clip(path, read_caption(txt)))
    if not clips:
        raise DataError(f"--data {folder}: no captioned clips (expected .mp4/.gif files or folders of frames, "
                        "each with a same-named .txt caption)")
    return clips


def read_caption(txt) -> str:
    """A caption file's text: UTF-8, with or without the byte-order mark some editors write; not UTF-8 is an
    error naming the file (``os_errors``)."""
    try:
        return txt.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as e:
        raise DataError(explain(e, txt)) from None
    except OSError as e:
        raise DataError(explain(e, txt)) from None


def check_captions(clips, caption_dropout):
    """All captions blank is refused: the run would learn the empty prompt only, and the LoRA would then ignore
    every prompt it is used with (almost always captions not written yet). Training without text on purpose is
    ``--caption-dropout 1`` (every caption replaced by ''). Some blank captions: a warning naming them."""
    blank = [c.path.name for c in clips if not c.caption]
    if blank and len(blank) == len(clips) and caption_dropout < 1:
        raise DataError(f"--data: all {len(clips)} captions are blank ({', '.join(blank[:5])}"
                        f"{', ...' if len(blank) > 5 else ''}): write what each clip shows in its .txt, or pass "
                        "--caption-dropout 1 if you mean to train without text")
    if blank and len(blank) < len(clips):
        warnings.warn(f"{len(blank)} of {len(clips)} captions are blank, so those clips train on the empty prompt: "
                      f"{', '.join(blank[:10])}{', ...' if len(blank) > 10 else ''}", stacklevel=3)


def bad(on_bad, message):
    if on_bad == "stop":
        raise DataError(message + " (pass --on-bad-clip skip to leave such clips out)")
    warnings.warn(f"skipped {message}", stacklevel=3)


def read_clip(path, frames, size, stride=1) -> torch.Tensor:
    """``frames`` frames ``stride`` apart from the start, centre-cropped square and resized: (F, size, size, 3).
    Files are looked at before they are decoded (``t2vlab.video``: sizes and frame counts within its limits,
    truncated files named); of a folder of frames only the files used are read."""
    path = Path(path)
    need = (frames - 1) * stride + 1
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            video = np.stack([image_input(p, str(p)) for p in files[:need:stride]])
            have = len(files)
        else:
            video = video_input(path, str(path))[0]
            have, video = len(video), video[:need:stride]
    except VideoFileError as e:  # too large or truncated: the message names the file already
        raise DataError(str(e)) from None
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: unreadable clip ({e})") from None
    if have < need:
        raise DataError(f"{path}: too short: {have} frames, {frames} frames {stride} apart need {need}")
    x = torch.from_numpy(video).permute(0, 3, 1, 2)  # (F, 3, H, W)
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(0, 1).permute(0, 2, 3, 1)


@torch.no_grad()
def encode_data(pipe, clips, args, chunk=16):
    """{"latents": (N, 4, F, h, w), "text": (N, L, D), "empty": (1, L, D)}: every usable clip encoded once,
    ``chunk`` clips per VAE call."""
    latents, captions, pixels = [], [], []

    def encode():
        if pixels:
            latents.append(pipe.encode_video(torch.stack(pixels), sample=False).float().cpu())
            pixels.clear()

    for clip in tqdm(clips, desc="encoding clips", disable=args.quiet):
        try:
            pixels.append(read_clip(clip.path, args.frames, args.size, args.stride))
        except DataError as e:
            bad(args.on_bad_clip, str(e))
            continue
        captions.append(clip.caption)
        if len(pixels) == chunk:
            encode()
    encode()
    if not latents:
        raise DataError(f"--data {args.data}: none of the {len(clips)} clips could be used")
    text, _ = pipe.encode_prompt(captions, pipe.device, do_classifier_free_guidance=False)
    empty, _ = pipe.encode_prompt([""], pipe.device, do_classifier_free_guidance=False)
    return {"latents": torch.cat(latents), "text": text.float().cpu(), "empty": empty.float().cpu()}


def cached_data(pipe, accelerator, args, out):
    """The encoded data, computed by the main process once and read by every process from the cache file
    (reused on --resume; made again when the data settings changed)."""
    cache, key = out / "cache.safetensors", json.dumps(
        {k: str(getattr(args, k)) for k in ("data", "model", "frames", "size", "stride")}, sort_keys=True)
    if accelerator.is_main_process:
        meta = None
        if cache.is_file():
            with safetensors.safe_open(str(cache), "pt") as f:
                meta = f.metadata()
        if not meta or meta.get("settings") != key:
            clips = find_clips(args.data, args.on_bad_clip)
            check_captions(clips, args.caption_dropout)
            data = encode_data(pipe, clips, args)
            with atomic_file(cache) as tmp:
                safetensors.torch.save_file(data, str(tmp), metadata={"settings": key})
    accelerator.wait_for_everyone()
    return safetensors.torch.load_file(str(cache))


# --------------------------------------------------------------------------------------- one step
def step_draws(step, seed, n_clips, global_batch, latent_shape, num_timesteps, caption_dropout):
    """What step ``step`` draws, for the whole global batch: clip indices, noise, timesteps, dropped captions,
    and for --train motion a frame (the appearance path's) and an anchor frame (the debiased loss's) per clip."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (MAX_SEED + 1))  # any --seed in [0, 2^64)
    return {"index": torch.randint(n_clips, (global_batch,), generator=g),
            "noise": torch.randn(global_batch, *latent_shape, generator=g),
            "t": torch.randint(num_timesteps, (global_batch,), generator=g),
            "drop": torch.rand(global_batch, generator=g) < caption_dropout,
            "frame": torch.randint(latent_shape[1], (global_batch,), generator=g),  # drawn last: the draws
            "anchor": torch.randint(latent_shape[1], (global_batch,), generator=g)}  # above stay as they were


def noisy_clips(scheduler, data, draws):
    """(x_t, text) of the clips ``draws`` picked: noised at their timesteps, some captions dropped."""
    x0 = data["latents"][draws["index"]]
    text = torch.where(draws["drop"][:, None, None], data["empty"], data["text"][draws["index"]])
    return scheduler.add_noise(x0, draws["noise"], draws["t"]), text


def diffusion_loss(unet, scheduler, data, draws):
    """|| unet(x_t, t, text) - eps ||^2 on the clips ``draws`` picked."""
    x_t, text = noisy_clips(scheduler, data, draws)
    return F.mse_loss(unet(x_t, draws["t"], text).float(), draws["noise"])


def motion_director_loss(dual_path, scheduler, data, draws):
    """--train motion: the appearance path's loss plus the motion path's (``motion_director.DualPath``)."""
    x_t, text = noisy_clips(scheduler, data, draws)
    return dual_path(x_t, draws["t"], text, draws["noise"], draws["frame"], draws["anchor"])


# --------------------------------------------------------------------------------- training states
def save_training_state(out, step, unet, optimizer, losses, keep=2, adapters=(ADAPTER,), settings=None):
    """DIR/training-states/state-N/ (the LoRA, the optimizer, the step, the losses so far and the ``settings`` a
    resume must keep) written whole or not at all; then the oldest beyond ``keep`` are removed (only folders t2vlab
    wrote). Each file is serialised in memory and written with plain file writes (a few MB of LoRA and optimizer
    state), so a full disk is an ``OSError`` that says so, not torch's "[enforce fail at inline_container.cc]"."""
    with atomic_folder(out / STATES / f"state-{step:07d}", overwrite=True) as tmp:
        for name in adapters:
            tensors = {k: v.contiguous() for k, v in lora_state_dict(unet, name).items()}
            write_bytes(tmp / f"lora-{name}.safetensors", safetensors.torch.save(tensors))
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        write_bytes(tmp / "optimizer.pt", buffer.getvalue())
        write_text(tmp / "state.json", json.dumps({"step": step, "losses": losses, "settings": settings}))
    for old in training_states(out)[:-keep]:
        if atomic.written_by_t2vlab(old):
            shutil.rmtree(old, ignore_errors=True)


def training_states(out) -> list[Path]:
    """Complete training states, oldest first (an interrupted write leaves only a hidden temporary folder)."""
    return sorted(p for p in (out / STATES).glob("state-*") if (p / "state.json").is_file())


def resume_settings(args) -> dict:
    """The ``RESUME_SETTINGS`` of a run, as they act: --lora-alpha not given is the rank (scale 1), so a run
    resumed with ``--lora-alpha R`` where it was left out is the same run."""
    settings = {k: getattr(args, k) for k in (*RESUME_SETTINGS, *getattr(args, "more_resume_settings", ()))}
    settings["lora_alpha"] = float(args.lora_rank if args.lora_alpha is None else args.lora_alpha)
    return settings


def check_resumable(folder, args):
    """Refuse, before any model loads, to resume a training state made with other settings (another --lora-rank,
    --train, ...): its tensors would not fit, or would mean something else. Names both values."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"--resume: {folder / 'state.json'} cannot be read ({e}); the training state is damaged: "
                        "remove that folder to resume from the one before") from None
    saved, now = state.get("settings") or {}, resume_settings(args)
    differ = [f"--{k.replace('_', '-')} {saved[k]} there, {now[k]} now" for k in now
              if k in saved and saved[k] != now[k]]
    if differ:
        raise DataError(f"--resume: the training state {folder} was made with other settings ({'; '.join(differ)}): "
                        "resume with the same ones, or start a new run in another --out")


def load_training_state(folder, unet, optimizer, adapters=(ADAPTER,)):
    """Put a training state's LoRA weights and optimizer state back; returns (step, losses).

    A transaction: every file is read and checked against this run's adapters (names, shapes) and optimizer
    (parameter groups, per-parameter state shapes) before anything is changed, so a state that does not fit
    raises ``DataError`` naming the file and the key and leaves the LoRA and the optimizer as they were."""
    tensors = {}
    for name in adapters:
        path = folder / f"lora-{name}.safetensors"
        try:
            tensors[name] = safetensors.torch.load_file(str(path))
        except Exception as e:  # noqa: BLE001  (missing, truncated, not safetensors: all mean the same here)
            raise DataError(f"--resume: {path} cannot be read ({str(e).splitlines()[0]})") from None
        own = lora_state_dict(unet, name)
        missing, extra = sorted(own.keys() - tensors[name].keys()), sorted(tensors[name].keys() - own.keys())
        wrong = [f"{k}: {tuple(tensors[name][k].shape)} in the file, {tuple(own[k].shape)} in this run"
                 for k in sorted(own.keys() & tensors[name].keys()) if tensors[name][k].shape != own[k].shape]
        if missing or extra or wrong:
            raise DataError(f"--resume: {path} does not fit this run's adapter {name!r} (other --lora-rank, --train or "
                            f"--feed-forward?): " + "; ".join(
                                [f"missing {', '.join(missing[:3])}"] * bool(missing)
                                + [f"unexpected {', '.join(extra[:3])}"] * bool(extra) + wrong[:3]))
    path = folder / "optimizer.pt"
    try:
        saved = torch.load(path, weights_only=True)
        check_optimizer_state(saved, optimizer, path)
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"--resume: {path} cannot be read ({str(e).splitlines()[0]})") from None
    with torch.no_grad():  # everything fits: now change things
        for name in adapters:
            own = lora_state_dict(unet, name)
            for k, v in tensors[name].items():
                own[k].copy_(v)
    optimizer.load_state_dict(saved)
    return state["step"], state["losses"]


def check_optimizer_state(saved, optimizer, path):
    """``saved`` (an optimizer's state_dict) fits ``optimizer``: the same groups of the same sizes, and each
    parameter's state tensors (Adam's moments) of that parameter's shape. DataError naming the key otherwise."""
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise DataError(f"--resume: {path}: 'param_groups' does not match this run's optimizer (another --optimizer?)")
    params = {}
    for i, (theirs, ours) in enumerate(zip(groups, optimizer.param_groups)):
        if len(theirs.get("params", ())) != len(ours["params"]):
            raise DataError(f"--resume: {path}: param_groups[{i}] holds {len(theirs.get('params', ()))} parameters, "
                            f"this run trains {len(ours['params'])} (another --train or --feed-forward?)")
        params.update(zip(theirs["params"], ours["params"]))
    for key, entry in (saved.get("state") or {}).items():
        for name, value in (entry.items() if isinstance(entry, dict) else ()):
            if torch.is_tensor(value) and value.dim() and key in params and value.shape != params[key].shape:
                raise DataError(f"--resume: {path}: state[{key}][{name!r}] has shape {tuple(value.shape)}, its "
                                f"parameter {tuple(params[key].shape)} (another --lora-rank?)")


def plot_losses(losses, path):
    """The loss curve as a PNG at ``path``, written whole or not at all. Drawn on its own Agg canvas, not
    through pyplot: a library call must not change the backend of the notebook it runs in."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: only the loss curve needs it
    from matplotlib.figure import Figure  # (same reason)

    fig = Figure(figsize=(5, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps, values = zip(*losses)
    ax.plot(steps, values, lw=0.8)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="fine-tuning loss")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")


# ------------------------------------------------------------------------------------- the trainer
def finetune(args):
    """Train as ``args`` say (see ``parse_args``); returns the LoRA file's path."""
    try:
        return train(args)
    finally:  # accelerate keeps its settings in a process-wide singleton: clear them, so that a second run in
        AcceleratorState._reset_state()  # the same process (a notebook, a test) may choose another precision
        GradientState._reset_state()  # (the process group of a launched run, if any, is kept)


def train(args):
    """The trainer, step by step (each a function below); returns the LoRA file's path."""
    out, motion = Path(args.out), args.train == "motion"
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation, cpu=args.cpu)
    check_processes(accelerator.num_processes, accelerator.distributed_type)  # N processes are one job, or stop
    start_output_folder(out, accelerator, args)
    pipe = frozen_pipeline(args.model, accelerator.device)
    data = cached_data(pipe, accelerator, args, out)
    pipe.text_encoder.to("cpu"), pipe.vae.to("cpu")  # the encoders leave the GPU; only the UNet trains
    freeze_unet(pipe.unet, args.mixed_precision, args.gradient_checkpointing)
    adapters, params = add_trained_adapters(pipe.unet, args)
    optimizer = make_optimizer(params, args)
    step, losses = resume_latest_state(out, pipe.unet, optimizer, adapters) if args.resume else (0, [])
    if accelerator.is_main_process:
        write_log(out, losses)
    model, optimizer = accelerator.prepare(DualPath(pipe.unet) if motion else pipe.unet, optimizer)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    data = {k: v.to(accelerator.device) for k, v in data.items()}

    quiet = args.quiet or not accelerator.is_main_process
    bar = tqdm(total=args.steps, initial=step, desc="fine-tuning", disable=quiet)
    while step < args.steps:
        loss = optimizer_step(step, model, optimizer, scheduler, data, accelerator, args)
        step += 1
        losses.append([step, loss])
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        if accelerator.is_main_process:
            after_step(out, step, losses, pipe, optimizer, adapters, accelerator, args)
        accelerator.wait_for_everyone()
    bar.close()
    if accelerator.is_main_process:
        write_results(out, pipe.unet, losses, step, accelerator.num_processes, args)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out / LORA_WEIGHT_NAME


def start_output_folder(out, accelerator, args):
    """--out made (and marked as t2vlab's) by the main process, before any model loads: a new folder, an empty
    one, or one this trainer wrote (t2vlab's marker, or training states of an older run); a folder holding
    training states already needs --resume, whose settings must match. What an interrupted run left (temporary
    files of a process that is gone) is removed."""
    if accelerator.is_main_process:
        found = training_states(out)
        if not args.resume and found:
            raise DataError(f"--out {out} holds training states already: pass --resume to continue, or another --out")
        if args.resume:
            if not found:
                raise DataError(f"--resume: no training state in {out / STATES}")
            check_resumable(found[-1], args)
        if out.is_dir() and not found and any(out.iterdir()) and not atomic.written_by_t2vlab(out):
            raise DataError(f"--out {out} is a folder t2vlab did not write, holding {atomic.contents(out)}: the "
                            "trainer writes (and replaces) its files there; give a new or empty folder")
        atomic.mark_folder(out)
        for folder in (out, out / STATES, out / "samples"):
            atomic.remove_leftovers(folder)
    accelerator.wait_for_everyone()


def frozen_pipeline(model, device):
    pipe = TextToVideoPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def freeze_unet(unet, mixed_precision, gradient_checkpointing):
    """The dtype policy of the frozen UNet: no gradients; with --mixed-precision its weights in half precision,
    half their memory, as they are computed in it anyway (the LoRA's own weights stay float32); dropout off,
    so that each step is a pure function of (seed, step)."""
    unet.requires_grad_(False)
    if mixed_precision != "no":
        unet.to(HALF[mixed_precision])
    unet.eval()
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()


def add_trained_adapters(unet, args):
    """The LoRA adapters that train (--train motion: motion_director's two); returns (their names, their
    parameters). A's first values come from --seed (B starts at zero)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.train == "motion":
            adapters = (APPEARANCE, MOTION)
            params = add_adapters(unet, args.lora_rank, args.lora_alpha, args.feed_forward)
        else:
            adapters = (ADAPTER,)
            params = add_lora(unet, lora_targets(unet, args.train, args.feed_forward), args.lora_rank,
                              args.lora_alpha, ADAPTER)
    for p in params:  # trained weights in float32: the optimizer's small updates, and fp16's loss scaler, need it
        p.data = p.data.float()
    return adapters, params


def make_optimizer(params, args):
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    return torch.optim.SGD(params, lr=args.lr, weight_decay=args.weight_decay)


def resume_latest_state(out, unet, optimizer, adapters):
    """--resume: the newest training state put back; returns (step, losses)."""
    found = training_states(out)
    if not found:
        raise DataError(f"--resume: no training state in {out / STATES}")
    return load_training_state(found[-1], unet, optimizer, adapters)


def write_log(out, losses):
    """log.jsonl from the losses so far: the steps of this run's history, each once (a resume continues it)."""
    write_text(out / "log.jsonl", "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in losses))


def optimizer_step(step, model, optimizer, scheduler, data, accelerator, args, loss_of=None, timesteps=None) -> float:
    """One optimizer step: ``--gradient-accumulation`` micro-steps, each this process's share of the global
    batch that (--seed, micro-step) draws; returns the loss averaged over processes and micro-steps.
    Another trainer shares it (``t2vlab.distill``) by giving its own ``loss_of(model, scheduler, data, draws)``
    (default: --train's loss) and ``timesteps``, how many the draws' "t" picks from (default: the scheduler's
    training timesteps)."""
    world, rank, batch = accelerator.num_processes, accelerator.process_index, args.batch_size
    if loss_of is None:
        loss_of = motion_director_loss if args.train == "motion" else diffusion_loss
    timesteps = scheduler.config.num_train_timesteps if timesteps is None else timesteps
    loss_sum = 0.0
    for micro in range(args.gradient_accumulation):
        draws = step_draws(step * args.gradient_accumulation + micro, args.seed, len(data["latents"]),
                           world * batch, data["latents"].shape[1:], timesteps, args.caption_dropout)
        mine = {k: v[rank * batch:(rank + 1) * batch].to(accelerator.device) for k, v in draws.items()}
        with accelerator.accumulate(model), accelerator.autocast():
            loss = loss_of(model, scheduler, data, mine)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += accelerator.reduce(loss.detach(), "mean").item() / args.gradient_accumulation
    return loss_sum


def after_step(out, step, losses, pipe, optimizer, adapters, accelerator, args):
    """The main process after each step: the log line; a training state every --state-every steps and after
    the last; a sample video and the loss curve every --sample-every steps."""
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "loss": losses[-1][1]}) + "\n")
    if args.state_every and (step % args.state_every == 0 or step == args.steps):
        save_training_state(out, step, pipe.unet, optimizer, losses, adapters=adapters, settings=resume_settings(args))
    if args.sample_every and step % args.sample_every == 0:
        with accelerator.autocast():  # the UNet's frozen weights may be in half precision
            sample(pipe, args, out / "samples" / f"step-{step:07d}.gif")
        plot_losses(losses, out / "loss.png")


def write_results(out, unet, losses, step, world, args):
    """The LoRA file (--train motion: the temporal adapter alone, the spatial one beside it) and the loss curve."""
    kept = MOTION if args.train == "motion" else ADAPTER  # motion only: the temporal LoRA is the result
    save_lora_file(out / LORA_WEIGHT_NAME, lora_state_dict(unet, kept), adapter_config(unet, kept))
    if args.train == "motion":
        save_lora_file(out / APPEARANCE_WEIGHT_NAME, lora_state_dict(unet, APPEARANCE),
                       adapter_config(unet, APPEARANCE))
    if losses:
        plot_losses(losses, out / "loss.png")
    print(f"LoRA written to {out / LORA_WEIGHT_NAME} ({step} steps, processes: {world}, "
          f"global batch {world * args.batch_size * args.gradient_accumulation})")


@torch.no_grad()
def sample(pipe, args, path):
    """A video of the first caption (or --sample-prompt) with the LoRA as it is now."""
    prompt = args.sample_prompt or find_clips(args.data, "skip")[0].caption
    if args.train == "motion":  # what the run keeps: the motion adapter alone (training sets its own each step)
        set_active(pipe.unet, [MOTION])
    settings = pipe.recommended
    frames = pipe(prompt, num_frames=args.frames, height=args.size, width=args.size,
                  num_inference_steps=settings.num_inference_steps,
                  generator=torch.Generator().manual_seed(args.seed)).frames[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    export_to_video(frames, str(path), overwrite=True)


# ------------------------------------------------------------------------------------------- the CLI
positive = cli(positive_int)  # argparse's type for a positive integer


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m t2vlab finetune", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of clips (.mp4/.gif/frame folders) with same-named .txt")
    ap.add_argument("--out", required=True, help="output folder: the LoRA, log, loss curve, samples, training states")
    ap.add_argument("--model", default="toy", help="checkpoint to fine-tune (folder, Hub id, 'toy', 'tiny')")
    ap.add_argument("--lora-rank", type=positive, default=16, help="the rank r of each LoRA (A: r x in, B: out x r)")
    ap.add_argument("--lora-alpha", type=cli(number, float, low=0, low_open=True), default=None,
                    help="default: the rank (scale 1)")
    ap.add_argument("--train", choices=(*TRAIN_CHOICES, "motion"), default="both",
                    help="which attention layers get LoRA; motion: MotionDirector's motion-only training, "
                         "which keeps the temporal LoRA alone")
    ap.add_argument("--feed-forward", action="store_true", help="also the transformers' feed-forwards")
    ap.add_argument("--frames", type=cli(positive_int, high=MAX_FRAMES), default=16, help="frames per clip")
    ap.add_argument("--stride", type=positive, default=1, help="take every STRIDE-th frame of each clip")
    ap.add_argument("--size", type=cli(integer, low=8, high=MAX_SIZE, multiple_of=8), default=256,
                    help="height and width in pixels (a multiple of 8, the VAE's factor)")
    ap.add_argument("--steps", type=positive, default=500, help="optimizer steps in all (also after --resume)")
    ap.add_argument("--batch-size", type=positive, default=1, help="clips per process per step")
    ap.add_argument("--gradient-accumulation", type=positive, default=1,
                    help="micro-steps of a global batch each per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    ap.add_argument("--weight-decay", type=cli(number, float, low=0), default=0.0, help="the optimizer's weight decay")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                    help="sgd: the update is the gradient itself (handy to compare runs to float precision)")
    ap.add_argument("--caption-dropout", type=float, default=0.0, help="share of captions replaced by ''")
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                    help="the frozen UNet's weights and compute in half precision (fp16 with loss scaling)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="less memory, about 1.4x the time")
    ap.add_argument("--seed", type=cli(seed), default=0,
                    help="every draw of a step comes from (seed, step); 0 to 2^64-1")
    ap.add_argument("--state-every", "--checkpoint-every", type=cli(integer, low=0), default=100, dest="state_every",
                    help="steps between training states, which --resume continues from (0: none; "
                         "--checkpoint-every is its old name)")
    ap.add_argument("--sample-every", type=cli(integer, low=0), default=0, help="steps between sample videos (0: none)")
    ap.add_argument("--sample-prompt", default=None, help="the sample videos' prompt (default: the first caption)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest training state in --out")
    ap.add_argument("--on-bad-clip", choices=("stop", "skip"), default="stop",
                    help="a clip without caption, unreadable or too short: stop (default) or skip it with a warning")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    try:
        number("--caption-dropout", args.caption_dropout, low=0, high=1)
        number("--lr", args.lr, low=0, low_open=True)
    except ValueError as e:
        ap.error(str(e))
    if os.path.lexists(args.out) and not os.path.isdir(args.out):  # before Accelerator and the model
        ap.error(f"--out {args.out} is a file; the trainer writes a folder there: give a folder's name")
    try:
        atomic.check_apart(args.out, [args.data] + ([args.model] if os.path.isdir(args.model) else []), "--out")
    except ValueError as e:
        ap.error(str(e))
    if args.train == "motion" and args.gradient_checkpointing:  # the recomputed forward would see the adapter
        ap.error("--gradient-checkpointing does not work with --train motion: its two paths switch adapters "
                 "between forwards, and checkpointing reruns a forward during the backward pass, after the switch")
    return args


def run_command(name, train, args) -> int:
    """``train(args)`` as the command ``t2vlab NAME`` runs it: 0, or its error in one line naming the command and
    exit status 2 (bad data or settings, a checkpoint's, a full disk, processes that are not one job)."""
    try:
        train(args)
    except (DataError, ValueError, OSError, LaunchError) as e:
        print(f"t2vlab {name}: {explain(e) if isinstance(e, OSError) and e.errno is not None else e}",
              file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    return run_command("finetune", finetune, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
