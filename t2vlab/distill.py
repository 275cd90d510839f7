"""Few-step video: distil a text-to-video model into a LoRA that samples in 4 steps: ``python -m t2vlab distill``.

    python -m t2vlab distill --out toy-lcm                 # the shipped toy model, on the toy world's own clips
    python -m t2vlab distill --model ID_OR_PATH --data CLIPS --out DIR [--steps 1000] [--guidance-scale 9]
    accelerate launch --num_processes 2 -m t2vlab distill ...      # data parallel, no code change

Latent consistency distillation (Luo et al. 2023, "Latent Consistency Models", Algorithm 1, LCD), in the video
form of MCM (Zhai et al. 2024) and T2V-Turbo (Li et al. 2024), with a LoRA as the student (LCM-LoRA). The
teacher is the frozen UNet; the student is the same UNet with the LoRA ``student``; the target network is the
same UNet with the LoRA ``target``, an exponential moving average of the student's. One step, for a clip's
latents x0, its caption c and the empty caption:

    the skip schedule   N = --num-ddim-timesteps points t_j = j (T // N) - 1 (19, 39, ..., 999 for N = 50), skip
                        k = T // N: draw j, t_{n+k} = t_j, t_n = max(t_j - k, 0)
    noise               x = sqrt(abar(t_{n+k})) x0 + sqrt(1 - abar(t_{n+k})) eps;  at t_{n+k} = t_N pure noise,
                        x = eps, as sampling starts (MCM's choice)
    the teacher's ODE   eps_w = eps(x, t_{n+k}, "") + w (eps(x, t_{n+k}, c) - eps(x, t_{n+k}, ""))  (guided)
    step (DDIM)         x0_w = (x - sqrt(1 - abar(t_{n+k})) eps_w) / sqrt(abar(t_{n+k}))
                        x_hat = sqrt(abar(t_n)) x0_w + sqrt(1 - abar(t_n)) eps_w          (x at t_n, on the ODE)
    consistency         f(x, t) = c_skip(t) x + c_out(t) x0(x, t)       (techniques/consistency.py: c_skip(0) = 1,
    function                                                              c_out(0) = 0, so f(x, 0) = x)
    the loss            d(f_student(x, t_{n+k}), f_target(x_hat, t_n)),  d: pseudo-Huber sqrt(e^2 + c^2) - c
                        (--loss huber, c = --huber-c, MCM's and T2V-Turbo's) or the squared error (--loss l2);
                        no gradient through the target
    the target          target <- mu target + (1 - mu) student after each step (mu = --ema-decay; 0: the
                        student itself, as MCM's and T2V-Turbo's LoRA runs do)

The guidance scale is fixed (--guidance-scale, default the checkpoint's own: 9 for the toy): the toy UNet has no
guidance embedding (``time_cond_proj_dim``), so w cannot be an input, and a fixed w distils exactly the one ODE
the teacher is sampled on, which is the one we compare against. (MCM's LoRA draws w from U[5, 15] without
embedding it, so its student learns an average of those ODEs.) The student then samples with
``LCMScheduler`` (``timestep_scaling`` = --timestep-scaling, ``original_inference_steps`` = N), guidance 1.0:
one UNet pass per step, at the timesteps its "even_upper" selection picks (``sampling_settings``).

Everything else is ``python -m t2vlab finetune``'s, reused: the data (a folder of captioned clips read once;
without --data, the toy world's own clips, ``--toy-clips`` of them written once to DIR/toy-clips-N-seedS/ as
frame folders), the latent cache, the draws of a step from (--seed, step) for the whole global batch (clip,
noise, and the schedule point j as the draws' "t"), the optimizer step under accelerate, the training states
(both adapters and the optimizer) and --resume, log.jsonl. Out: ``DIR/pytorch_lora_weights.safetensors`` (the
student, diffusers' LoRA format), ``DIR/training.json`` (the command, the settings to sample with, the times),
``DIR/log.jsonl``, ``DIR/loss.png``, ``DIR/training-states/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from . import finetune as ft
from .atomic import atomic_folder, write_text
from .checks import number, one_of, positive_int
from .lora import LORA_WEIGHT_NAME, adapter_config, add_lora, lora_state_dict, lora_targets, save_lora_file, set_active
from .schedulers import DDPMScheduler, from_name
from .techniques.consistency import boundary_scalings
from .toy import data as toy_data

STUDENT, TARGET = "student", "target"  # the two adapters on the one UNet (the teacher: no adapter)
SHIPPED = Path(__file__).resolve().parent / "data" / "toy_lcm_lora"  # the distilled toy student
LOSSES = ("huber", "l2")


# ------------------------------------------------------------------------------------- the skip schedule
def skip_schedule(num_train_timesteps=1000, num_ddim_timesteps=50):
    """(t_j for j = 1..N as a (N,) long tensor, the skip k): t_j = j (T // N) - 1, k = T // N."""
    k = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1) * k - 1, k


def ddim_solver_step(x, eps, abar_start, abar_end):
    """One DDIM step (eta = 0) of the probability-flow ODE from t_{n+k} to t_n, with the noise estimate eps:
    x0 = (x - sqrt(1 - abar_start) eps) / sqrt(abar_start);  x_hat = sqrt(abar_end) x0 + sqrt(1 - abar_end) eps.
    abar_start, abar_end broadcast against x (B, 1, 1, 1, 1). Returns x_hat."""
    x0 = (x - (1 - abar_start) ** 0.5 * eps) / abar_start**0.5
    return abar_end**0.5 * x0 + (1 - abar_end) ** 0.5 * eps


def pseudo_huber(a, b, c=0.001):
    """mean(sqrt((a - b)^2 + c^2) - c): the squared error near 0, the absolute error beyond c."""
    return (((a.float() - b.float()) ** 2 + c**2) ** 0.5 - c).mean()


def ema_update(target, online, decay):
    """target <- decay target + (1 - decay) online, tensor by tensor (two dicts with the same keys), in place."""
    keys = sorted(online)
    torch._foreach_lerp_([target[k] for k in keys], [online[k] for k in keys], 1.0 - decay)


def _column(v, like):
    """(B,) -> (B, 1, 1, 1, 1) in ``like``'s dtype and device, to broadcast over a video batch."""
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------------------------- one step
class ConsistencyDistillation(nn.Module):
    """The teacher, the student and the target as one module over one UNet, so that a data-parallel wrapper
    sees one forward per step: forward(x0 (B, C, F, h, w), noise like x0, j (B,) schedule indices 0..N-1,
    text (B, L, D), empty (1, L, D)) -> the consistency loss (module docstring). The teacher and the target run
    first, without gradients; the student runs last and its adapter stays active, so a forward recomputed by
    gradient checkpointing sees the same adapter."""

    def __init__(self, unet, alphas_cumprod, num_ddim_timesteps=50, guidance_scale=9.0, timestep_scaling=10.0,
                 loss="huber", huber_c=0.001):
        super().__init__()
        self.unet = unet
        self.timesteps, self.k = skip_schedule(len(alphas_cumprod), num_ddim_timesteps)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone(), persistent=False)
        self.guidance_scale, self.timestep_scaling = guidance_scale, timestep_scaling
        self.loss, self.huber_c = loss, huber_c

    def pair(self, j):
        """(t_{n+k}, t_n) for schedule indices j (B,): t_{n+k} = t_j, t_n = max(t_j - k, 0)."""
        start = self.timesteps.to(j.device)[j]
        return start, (start - self.k).clamp(min=0)

    def abar(self, t, like):
        return _column(self.alphas_cumprod[t.to(self.alphas_cumprod.device)], like)

    def consistency(self, x, t, text):
        """f(x, t) = c_skip(t) x + c_out(t) x0(x, t), x0 from the active adapter's noise estimate."""
        a = self.abar(t, x)
        x0 = (x - (1 - a) ** 0.5 * self.unet(x, t, text).float()) / a**0.5
        c_skip, c_out = boundary_scalings(_column(t.float(), x), self.timestep_scaling)
        return c_skip * x + c_out * x0

    @torch.no_grad()
    def teacher_step(self, x, start, end, text, empty):
        """x_hat at t_n: the teacher's guided DDIM step from x at t_{n+k} (no adapter acts)."""
        set_active(self.unet, [])
        eps_uncond, eps_cond = self.unet(torch.cat([x, x]), torch.cat([start, start]),
                                         torch.cat([empty.expand_as(text), text])).float().chunk(2)
        eps = eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)
        return ddim_solver_step(x, eps, self.abar(start, x), self.abar(end, x))

    @torch.no_grad()
    def target(self, x_hat, end, text):
        """f_target(x_hat, t_n): the EMA adapter's consistency function."""
        set_active(self.unet, [TARGET])
        return self.consistency(x_hat, end, text)

    def noisy(self, x0, noise, j, start):
        """x at t_{n+k}: x0 noised there; pure noise at the schedule's last point (where sampling starts)."""
        a = self.abar(start, x0)
        x = a**0.5 * x0 + (1 - a) ** 0.5 * noise
        last = (j == len(self.timesteps) - 1).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(last, noise, x)

    def forward(self, x0, noise, j, text, empty):
        start, end = self.pair(j)
        x = self.noisy(x0.float(), noise.float(), j, start)
        target = self.target(self.teacher_step(x, start, end, text, empty), end, text)
        set_active(self.unet, [STUDENT])
        student = self.consistency(x, start, text)
        if self.loss == "l2":
            return F.mse_loss(student, target)
        return pseudo_huber(student, target, self.huber_c)


def distillation_loss(model, solver, data, draws):
    """``finetune.optimizer_step``'s loss_of: the clips ``draws`` picked, their noise and schedule points."""
    i = draws["index"]
    return model(data["latents"][i], draws["noise"], draws["t"], data["text"][i], data["empty"])


# ------------------------------------------------------------------------------------------- the data
def write_toy_clips(folder, n, seed=0) -> Path:
    """``n`` clips of the toy world (its training combinations, ``toy.data.make_clips``) as ``finetune`` reads
    them (``toy.data.write_clip_folders``), written whole or not at all; a folder already there (same name: the
    same clips) is used as it is."""
    folder = Path(folder)
    if folder.is_dir():
        return folder
    videos, labels = toy_data.make_clips(n, seed=seed)
    with atomic_folder(folder) as tmp:
        toy_data.write_clip_folders(tmp, videos.numpy(), toy_data.captions(labels))
    return folder


# ------------------------------------------------------------------------------------------- the trainer
def distill(args):
    """Distil as ``args`` say (see ``parse_args``); returns the student LoRA's path."""
    try:
        return train(args)
    finally:  # accelerate's process-wide settings, cleared as finetune clears them
        ft.AcceleratorState._reset_state()
        ft.GradientState._reset_state()


def train(args):
    wall, cpu, load = time.time(), time.process_time(), os.getloadavg()[0]
    out = Path(args.out)
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              gradient_accumulation_steps=args.gradient_accumulation, cpu=args.cpu)
    ft.check_processes(accelerator.num_processes, accelerator.distributed_type)  # N processes are one job, or stop
    ft.start_output_folder(out, accelerator, args)
    pipe = ft.frozen_pipeline(args.model, accelerator.device)
    settings = pipe.recommended
    args.frames = args.frames or settings.num_frames
    args.size = args.size or settings.height
    w = settings.guidance_scale if args.guidance_scale is None else args.guidance_scale  # (None: the teacher's, kept
    # as given in args, which a --resume compares before any model loads)
    if args.data is None:
        if accelerator.is_main_process:
            write_toy_clips(out / f"toy-clips-{args.toy_clips}-seed{args.seed}", args.toy_clips, args.seed)
        accelerator.wait_for_everyone()
        args.data = str(out / f"toy-clips-{args.toy_clips}-seed{args.seed}")
    data = ft.cached_data(pipe, accelerator, args, out)
    pipe.text_encoder.to("cpu"), pipe.vae.to("cpu")  # the encoders leave the GPU; only the UNet runs
    ft.freeze_unet(pipe.unet, args.mixed_precision, args.gradient_checkpointing)
    params = add_student_and_target(pipe.unet, args)
    optimizer = ft.make_optimizer(params, args)
    adapters = (STUDENT, TARGET)
    step, losses = ft.resume_latest_state(out, pipe.unet, optimizer, adapters) if args.resume else (0, [])
    first_step = step
    if accelerator.is_main_process:
        ft.write_log(out, losses)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    module = ConsistencyDistillation(pipe.unet, scheduler.alphas_cumprod, args.num_ddim_timesteps, w,
                                     args.timestep_scaling, args.loss, args.huber_c)
    model, optimizer = accelerator.prepare(module, optimizer)
    data = {k: v.to(accelerator.device) for k, v in data.items()}
    student, target = lora_state_dict(pipe.unet, STUDENT), lora_state_dict(pipe.unet, TARGET)

    bar = tqdm(total=args.steps, initial=step, desc="distilling", disable=args.quiet or not accelerator.is_main_process)
    while step < args.steps:
        loss = ft.optimizer_step(step, model, optimizer, module, data, accelerator, args,
                                 loss_of=distillation_loss, timesteps=args.num_ddim_timesteps)
        with torch.no_grad():
            ema_update(target, student, args.ema_decay)
        step += 1
        losses.append([step, loss])
        bar.update()
        bar.set_postfix(loss=f"{loss:.4f}")
        if accelerator.is_main_process:
            ft.after_step(out, step, losses, pipe, optimizer, adapters, accelerator, args)
        accelerator.wait_for_everyone()
    bar.close()
    set_active(pipe.unet, [STUDENT])
    if accelerator.is_main_process:
        times = {"wall_seconds": round(time.time() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                 "torch_threads": torch.get_num_threads(), "load_average_at_start": round(load, 2),
                 "load_average_at_end": round(os.getloadavg()[0], 2), "processes": accelerator.num_processes,
                 "from_step": first_step, "to_step": step, "teacher_guidance_scale": w}
        write_results(out, pipe.unet, losses, step, args, times)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out / LORA_WEIGHT_NAME


def add_student_and_target(unet, args):
    """The student LoRA on the attention and feed-forward linears (A's first values from --seed, B zeros) and
    the target, a copy of it that learns nothing; returns the student's parameters, float32."""
    paths = lora_targets(unet, "both", feed_forward=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        params = add_lora(unet, paths, args.lora_rank, args.lora_alpha, STUDENT)
    fixed = add_lora(unet, paths, args.lora_rank, args.lora_alpha, TARGET)
    for p in params + fixed:  # float32 (the optimizer's small updates, and the EMA's, need it)
        p.data = p.data.float()
    for p, q in zip(fixed, params):  # the target follows the student by ema_update, never by a gradient
        p.requires_grad_(False)
        p.data.copy_(q.data)
    return params


def sampling_settings(args) -> dict:
    """How the student samples: LCM's scheduler on the distillation's schedule, one pass per step, at the
    timesteps "even_upper" picks (``schedulers.lcm``: 999, 799, 599, 399 for 4 of 50 points, where diffusers'
    "even" takes 999, 759, 499, 259). Its last step starts higher (399, not 259): on the shipped toy student, 4
    steps read the right colour in 96.5% of 48 captions x seeds 3-5 against 93.8% with "even" (where it was
    chosen), and 95.8% against 91.7% on seeds 0-2; 2 steps 78.5% against 75.0%, 8 steps 97.9% against 98.6%
    (seeds 3-5; docs/benchmarks.md, issue 28)."""
    return {"scheduler": "lcm-upper", "num_inference_steps": 4, "guidance_scale": 1.0,
            "scheduler_config": {"timestep_scaling": args.timestep_scaling,
                                 "original_inference_steps": args.num_ddim_timesteps}}


def write_results(out, unet, losses, step, args, times):
    """The student LoRA, the loss curve and training.json: the settings to sample with, and every run that made
    the student (a resumed run adds itself to the runs before it; the first run's command set the settings), with
    the total times."""
    save_lora_file(out / LORA_WEIGHT_NAME, lora_state_dict(unet, STUDENT), adapter_config(unet, STUDENT))
    if losses:
        ft.plot_losses(losses, out / "loss.png")
    runs = previous_runs(out) if args.resume else []
    runs.append({"command": args.command, **times})
    record = {"command": runs[0]["command"], "teacher": args.model,
              "teacher_guidance_scale": times["teacher_guidance_scale"], "recommended": sampling_settings(args),
              "steps": step, "settings": {k: v for k, v in sorted(vars(args).items()) if k != "command"},
              "torch": torch.__version__, "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1),
              "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1), "torch_threads": times["torch_threads"],
              "runs": runs}
    write_text(out / "training.json", json.dumps(record, indent=2) + "\n")
    print(f"student LoRA written to {out / LORA_WEIGHT_NAME} ({step} steps, {times['wall_seconds']} s wall, "
          f"{times['cpu_seconds']} s CPU); sample it with LCM (lcm-upper), 4 steps, guidance 1.0")


def previous_runs(out) -> list:
    """The runs an earlier, finished run of this folder recorded in its training.json (none if it has none: a run
    stopped before its end writes none, and its time is not counted)."""
    try:
        return list(json.loads((out / "training.json").read_text(encoding="utf-8")).get("runs", []))
    except (OSError, ValueError):
        return []


# ------------------------------------------------------------------------------------- using a student
def distilled_settings(folder=SHIPPED) -> dict:
    """The settings a student written by ``distill`` samples at (its training.json's "recommended")."""
    return json.loads((Path(folder) / "training.json").read_text(encoding="utf-8"))["recommended"]


def load_distilled(pipe, folder=SHIPPED, adapter_name="lcm") -> dict:
    """Load a student LoRA into ``pipe`` and switch its scheduler to the student's LCM; returns the settings
    (``num_inference_steps``, ``guidance_scale``) to call the pipeline with. Default: the shipped toy student."""
    settings = distilled_settings(folder)
    pipe.load_lora_weights(folder, adapter_name=adapter_name)
    pipe.scheduler = from_name(settings["scheduler"], pipe.scheduler.config, **settings["scheduler_config"])
    return settings


# ------------------------------------------------------------------------------------------- the CLI
def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(prog="python -m t2vlab distill", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder: the student LoRA, training.json, log, states")
    ap.add_argument("--model", default="toy", help="the teacher (folder, Hub id, 'toy', 'tiny')")
    ap.add_argument("--data", default=None, help="folder of captioned clips, as finetune reads them (default: "
                                                 "the toy world's clips, written to OUT/toy-clips-N-seedS/)")
    ap.add_argument("--toy-clips", type=ft.positive, default=256, help="without --data: how many toy clips")
    ap.add_argument("--frames", type=ft.positive, default=None, help="frames per clip (default: the teacher's)")
    ap.add_argument("--stride", type=ft.positive, default=1, help="take every STRIDE-th frame of each clip")
    ap.add_argument("--size", type=ft.positive, default=None, help="height and width (default: the teacher's)")
    ap.add_argument("--lora-rank", type=ft.positive, default=16, help="the student LoRA's rank")
    ap.add_argument("--lora-alpha", type=float, default=None, help="default: the rank (scale 1)")
    ap.add_argument("--steps", type=ft.positive, default=500, help="optimizer steps in all (also after --resume)")
    ap.add_argument("--batch-size", type=ft.positive, default=8, help="clips per process per step")
    ap.add_argument("--gradient-accumulation", type=ft.positive, default=1, help="micro-steps per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="the optimizer's weight decay")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--guidance-scale", type=float, default=None,
                    help="the teacher's fixed guidance w (default: the teacher's recommended, 9 for the toy)")
    ap.add_argument("--num-ddim-timesteps", type=ft.positive, default=50,
                    help="N, the points of the teacher's DDIM schedule (skip k = 1000 // N; the student's "
                         "original_inference_steps)")
    ap.add_argument("--timestep-scaling", type=float, default=10.0,
                    help="k in c_skip, c_out (LCM's 10; MCM's adapters 4): the student's LCM timestep_scaling")
    ap.add_argument("--loss", choices=LOSSES, default="huber", help="pseudo-Huber (MCM's, T2V-Turbo's) or l2")
    ap.add_argument("--huber-c", type=float, default=0.001, help="c of the pseudo-Huber loss")
    ap.add_argument("--ema-decay", type=float, default=0.95,
                    help="the target network's EMA decay mu (LCM's 0.95; 0: the student itself)")
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                    help="the frozen UNet's weights and compute in half precision")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="less memory, more time")
    ap.add_argument("--seed", type=int, default=0, help="every draw of a step comes from (seed, step)")
    ap.add_argument("--state-every", type=int, default=100,
                    help="steps between training states, which --resume continues from (0: none)")
    ap.add_argument("--resume", action="store_true", help="continue from the newest training state in --out")
    ap.add_argument("--on-bad-clip", choices=("stop", "skip"), default="stop")
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is there")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    # what finetune's shared pieces read: no samples, no caption dropout, the student on both paths with their
    # feed-forwards; and the distillation's own settings a --resume must keep as well as finetune's
    ap.set_defaults(sample_every=0, caption_dropout=0.0, train="both", feed_forward=True,
                    more_resume_settings=("num_ddim_timesteps", "guidance_scale", "timestep_scaling", "ema_decay",
                                          "loss", "huber_c"))
    args = ap.parse_args(argv)
    try:
        number("--lr", args.lr, low=0, low_open=True)
        number("--ema-decay", args.ema_decay, low=0, high=1, high_open=True)
        number("--huber-c", args.huber_c, low=0, low_open=True)
        number("--timestep-scaling", args.timestep_scaling, low=0, low_open=True)
        positive_int("--num-ddim-timesteps", args.num_ddim_timesteps, high=1000)
        one_of("--loss", args.loss, LOSSES)
        if args.guidance_scale is not None:
            number("--guidance-scale", args.guidance_scale, low=1)
    except ValueError as e:
        ap.error(str(e))
    args.command = " ".join(["python -m t2vlab distill", *map(shlex.quote, argv)])
    return args


def main(argv=None):
    return ft.run_command("distill", distill, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
