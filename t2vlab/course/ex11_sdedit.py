"""Notebook 11's exercises: SDEdit's start, where the reverse process begins and the video noised to it."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..schedulers import from_name
from ..video_to_video import VideoToVideoPipeline
from ..weights import SCHEDULER_CONFIG
from .core import Exercise, ExerciseMistake, call, compare, generator, register


def sdedit_timesteps(timesteps, strength):
    """timesteps (N,) the sampler's schedule, falling from noise to clean; strength s in (0, 1] -> the tail
    that SDEdit runs: its last int(N * s) timesteps (all N at s = 1)."""
    n = min(int(len(timesteps) * strength), len(timesteps))
    return timesteps[len(timesteps) - n:]


def check_sdedit_timesteps(fn):
    scheduler = from_name("dpm++", SCHEDULER_CONFIG)
    steps = 25
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.clone()
    package = SimpleNamespace(scheduler=scheduler)  # get_timesteps reads only the pipeline's scheduler
    for s in (0.3, 0.7, 0.85, 1.0):
        want = VideoToVideoPipeline.get_timesteps(package, steps, s)
        n = int(steps * s)
        got = call(fn, timesteps, s)
        what = f"sdedit_timesteps(timesteps, strength={s})"
        if torch.is_tensor(got) and len(got) == steps - n and s < 1:
            raise ExerciseMistake(f"{what} has {len(got)} timesteps, {steps} - int({steps} * {s}): the strength "
                                  f"says how many steps run ({n}), not how many are skipped")
        compare(got, want, what, mistakes={
            "taking the first int(N s) timesteps: the schedule's head is the noisiest part; SDEdit runs the tail":
                timesteps[:n],
        })


def noise_to(z0, noise, t, alphas_cumprod):
    """The forward process in one jump: z0 (B, C, F, h, w) clean latents, noise like z0, t an integer timestep
    -> x_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) noise."""
    abar = alphas_cumprod[t]
    return abar.sqrt() * z0 + (1 - abar).sqrt() * noise


def check_noise_to(fn):
    scheduler = from_name("dpm++", SCHEDULER_CONFIG)  # the toy's sampler in notebook 11
    scheduler.set_timesteps(25)
    g = generator(13)
    z0, noise = torch.randn(2, 4, 3, 4, 4, generator=g), torch.randn(2, 4, 3, 4, 4, generator=g)
    t = int(scheduler.timesteps[7])  # where strength 0.72 starts: DPM-Solver's add_noise takes its own timesteps
    package = SimpleNamespace(scheduler=scheduler, free_noise=None)  # noise_video reads these two
    want = VideoToVideoPipeline.noise_video(package, z0, torch.tensor([t]), None, noise=noise)
    abar, alphas = scheduler.alphas_cumprod, 1 - scheduler.betas
    compare(call(fn, z0, noise, t, abar), want, f"noise_to(z0, noise, t={t}, alphas_cumprod)", mistakes={
        "without the square roots (abar z0 + (1 - abar) noise)": abar[t] * z0 + (1 - abar[t]) * noise,
        "with z0 and the noise swapped (sqrt(abar_t) weighs what is kept of the video)":
            abar[t].sqrt() * noise + (1 - abar[t]).sqrt() * z0,
        "with alphas (one step's alpha_t) instead of alphas_cumprod (their product up to t)":
            alphas[t].sqrt() * z0 + (1 - alphas[t]).sqrt() * noise,
    })


register(Exercise("11.timesteps", "SDEdit's starting timestep", "sdedit_timesteps", check_sdedit_timesteps,
                  sdedit_timesteps, hint="n = int(len(timesteps) * strength); the last n: timesteps[len - n:]"))
register(Exercise("11.noise_to", "noising the video to the start", "noise_to", check_noise_to, noise_to,
                  hint="abar = alphas_cumprod[t]; abar.sqrt() * z0 + (1 - abar).sqrt() * noise"))
