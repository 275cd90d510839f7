"""Notebook 02's exercises: the DDPM posterior q(x_t' | x_t, x0) and the DDIM step."""

from __future__ import annotations

import torch

from ..configs import SCHEDULER
from ..noise import draw_noise
from ..schedulers import DDIMScheduler, DDPMScheduler
from .core import Exercise, ExerciseMistake, call, compare, generator, register

STEPS = 10  # the checks step through a 10-step schedule of the checkpoint's betas


# --------------------------------------------------------------------------- 02.posterior: DDPM's step
def ddpm_posterior(x0, x_t, abar_t, abar_prev):
    """Mean and variance of q(x_t' | x_t, x0), the Gaussian a DDPM step samples from.

    x0, x_t (any shape, the same); abar_t, abar_prev: alpha-bar at t and at the previous timestep t' (0-d tensors).
    Returns (mean like x_t, var a 0-d tensor)."""
    alpha = abar_t / abar_prev                  # the signal kept from t' to t
    beta = 1 - alpha                            # the noise added from t' to t
    mean = (abar_prev.sqrt() * beta * x0 + alpha.sqrt() * (1 - abar_prev) * x_t) / (1 - abar_t)
    var = (1 - abar_prev) / (1 - abar_t) * beta
    return mean, var


def _package_posterior(scheduler, t, x0, x_t):
    """The mean and std of the package's DDPMScheduler.step from t, measured from the step itself: run it twice
    with two noise draws z1, z2 (x' = mean + std z), solve for std by least squares, then mean = x'_1 - std z1."""
    a_t = scheduler.alphas_cumprod[t]
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()  # the model output that makes the step's x0_hat exactly x0
    draws = []
    for seed in (11, 12):
        out = scheduler.step(eps, t, x_t, generator=generator(seed)).prev_sample
        draws.append((out, draw_noise(x_t.shape, generator(seed), x_t.device, x_t.dtype)))
    (p1, z1), (p2, z2) = draws
    std = ((p1 - p2) * (z1 - z2)).sum() / (z1 - z2).pow(2).sum()
    return p1 - std * z1, std**2


def check_ddpm_posterior(fn):
    scheduler = DDPMScheduler.from_config(SCHEDULER, clip_sample=False)
    scheduler.set_timesteps(STEPS)
    g = generator(2)
    x0 = torch.randn(2, 4, 5, 5, generator=g).clamp(-1, 1)
    noise = torch.randn(x0.shape, generator=g)
    abar = scheduler.alphas_cumprod
    for i in (1, STEPS // 2, STEPS - 2):  # early, middle and late in the schedule
        t, t_prev = scheduler.timesteps[i], scheduler.timesteps[i + 1]
        a_t, a_p = abar[t], abar[t_prev]
        x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * noise
        want_mean, want_var = _package_posterior(scheduler, t, x0, x_t)
        got = call(fn, x0, x_t, a_t, a_p)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseMistake("ddpm_posterior should return two things, (mean, var)")
        mean, var = got
        alpha = a_t / a_p
        # the mean: float32 rounding of the same formula; the measured std is exact to ~1e-6 relative, so the
        # package's mean is too: compare's default tolerances (rtol 1e-4, atol 1e-5)
        compare(mean, want_mean, f"the mean at t={int(t)}", mistakes={
            "with beta_t = 1 - abar_t (the noise added from 0 to t) instead of 1 - abar_t / abar_t' (from t' to t)":
                (a_p.sqrt() * (1 - a_t) * x0 + alpha.sqrt() * (1 - a_p) * x_t) / (1 - a_t),
            "with the coefficients of x0 and x_t swapped":
                (a_p.sqrt() * (1 - alpha) * x_t + alpha.sqrt() * (1 - a_p) * x0) / (1 - a_t),
            "with sqrt(abar_t) on x0 instead of sqrt(abar_t')":
                (a_t.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - a_p) * x_t) / (1 - a_t),
        })
        var = torch.as_tensor(var, dtype=torch.float32)
        # the variance, measured back from two draws of the package's step: relative 1e-4 (rtol), like the mean
        compare(var.reshape(()) if var.numel() == 1 else var, want_var.reshape(()), f"the variance at t={int(t)}",
                mistakes={"with beta_t itself as the variance (DDPM's 'fixed_large' choice), not the posterior's "
                          "(1 - abar_t') / (1 - abar_t) beta_t (the package's 'fixed_small')": 1 - alpha,
                          "returning the standard deviation, not the variance (a square root too many)":
                              ((1 - a_p) / (1 - a_t) * (1 - alpha)).sqrt()}, atol=1e-7)


register(Exercise("02.posterior", "the DDPM posterior q(x_t' | x_t, x0)", "ddpm_posterior", check_ddpm_posterior,
                  ddpm_posterior, hint="alpha = abar_t / abar_t', beta = 1 - alpha; mean = (sqrt(abar_t') beta x0 "
                                       "+ sqrt(alpha) (1 - abar_t') x_t) / (1 - abar_t); "
                                       "var = (1 - abar_t') / (1 - abar_t) beta"))


# --------------------------------------------------------------------------- 02.ddim_step: DDIM, eta = 0
def ddim_step(eps, x, abar_t, abar_prev):
    """One DDIM step (eta = 0) from t to t': x the latents at t, eps the model's noise estimate,
    abar_t and abar_prev alpha-bar at t and t' (0-d tensors) -> x_t' (the shape of x)."""
    x0_hat = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()      # undo the noising with the estimated noise
    return abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps  # noise x0_hat again, to the level of t'


def check_ddim_step(fn):
    scheduler = DDIMScheduler.from_config(SCHEDULER, clip_sample=False)
    scheduler.set_timesteps(STEPS)
    g = generator(3)
    x, eps = torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 4, 5, 5, generator=g)
    for t in scheduler.timesteps[[0, STEPS // 2, -1]]:  # the first, a middle and the last step
        prev_t = t - scheduler.config["num_train_timesteps"] // STEPS
        a_t = scheduler.alphas_cumprod[t]
        a_p = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        # x0_hat divides by sqrt(abar_t) (0.068 at t=901): float32 rounding grows by ~15x, still far below 1e-4
        compare(call(fn, eps, x, a_t, a_p), scheduler.step(eps, t, x).prev_sample, f"ddim_step at t={int(t)}",
                mistakes={
                    "without dividing x0_hat by sqrt(abar_t)": a_p.sqrt() * (x - (1 - a_t).sqrt() * eps)
                    + (1 - a_p).sqrt() * eps,
                    "re-noising with sqrt(1 - abar_t) (the noise level of t, not of t')":
                        a_p.sqrt() * x0 + (1 - a_t).sqrt() * eps,
                    "with abar where its square root belongs": a_p * (x - (1 - a_t) * eps) / a_t + (1 - a_p) * eps,
                    "returning x0_hat, not x_t'": x0,
                }, rtol=1e-4, atol=1e-4)


register(Exercise("02.ddim_step", "the DDIM step (eta = 0)", "ddim_step", check_ddim_step, ddim_step,
                  hint="x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t); x_t' = sqrt(abar_t') x0_hat + "
                       "sqrt(1 - abar_t') eps"))
