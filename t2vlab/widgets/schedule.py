"""The schedule explorer's pictures: how much of a picture is left at timestep t, the alpha-bar and SNR
curves, and which timesteps each sampler visits."""

from __future__ import annotations

import numpy as np
import torch

from ..schedulers import from_name
from ..weights import SCHEDULER_CONFIG
from .figures import new_figure, to_rgb


def default_scheduler_config():
    """The published model's scheduler config (DDIM, scaled-linear betas, 1000 training steps)."""
    return dict(SCHEDULER_CONFIG)


def schedule_curves(scheduler) -> dict:
    """alpha-bar_t (share of the signal's variance left at t) and SNR_t = abar / (1 - abar), t = 0..T-1."""
    abar = scheduler.alphas_cumprod.double()
    return {"t": np.arange(len(abar)), "alpha_bar": abar.numpy(), "snr": (abar / (1 - abar)).numpy()}


def noised_picture(picture, scheduler, t, seed=0) -> torch.Tensor:
    """q(x_t | x0): sqrt(abar_t) * picture + sqrt(1 - abar_t) * noise, same noise for every t (seeded)."""
    noise = torch.randn(picture.shape, generator=torch.Generator().manual_seed(seed))
    abar = scheduler.alphas_cumprod[int(t)]
    return abar.sqrt() * picture + (1 - abar).sqrt() * noise


def timesteps_for(name, steps, config=None) -> np.ndarray:
    """The timesteps the named scheduler visits in ``steps`` inference steps."""
    scheduler = from_name(name, config or default_scheduler_config())
    scheduler.set_timesteps(int(steps))
    return scheduler.timesteps.float().numpy()


def schedule_figure(picture, scheduler, t, timesteps=None, name=None, seed=0):
    """The picture noised to t, and alpha-bar and SNR over t with a marker at t (and, if given, the
    timesteps a sampler visits as ticks)."""
    curves = schedule_curves(scheduler)
    t = int(t)
    abar, snr = curves["alpha_bar"][t], curves["snr"][t]
    fig = new_figure(10, 3.2)
    ax_img, ax_abar, ax_snr = fig.subplots(1, 3, width_ratios=[1, 1.4, 1.4])
    ax_img.imshow(to_rgb(noised_picture(picture, scheduler, t, seed)))
    ax_img.set_title(f"x_t at t = {t}", fontsize=10)
    ax_img.axis("off")
    ax_abar.plot(curves["t"], curves["alpha_bar"], label="alpha-bar (signal)")
    ax_abar.plot(curves["t"], 1 - curves["alpha_bar"], label="1 - alpha-bar (noise)", alpha=0.7)
    ax_abar.plot([t], [abar], "o", color="crimson")
    ax_abar.axvline(t, color="crimson", lw=0.8)
    ax_abar.set_xlabel("t")
    ax_abar.set_title(f"alpha-bar_t = {abar:.3f}", fontsize=10)
    ax_snr.semilogy(curves["t"], curves["snr"])
    ax_snr.plot([t], [snr], "o", color="crimson")
    ax_snr.axvline(t, color="crimson", lw=0.8)
    ax_snr.set_xlabel("t")
    ax_snr.set_title(f"SNR_t = {snr:.3g}", fontsize=10)
    if timesteps is not None and len(timesteps):
        label = f"{name or 'sampler'}: {len(timesteps)} steps"
        ax_abar.plot(timesteps, np.interp(timesteps, curves["t"], curves["alpha_bar"]), "|", color="k",
                     markersize=12, label=label)
        ax_snr.plot(timesteps, np.interp(timesteps, curves["t"], curves["snr"]), "|", color="k", markersize=12)
    ax_abar.legend(fontsize=7, loc="center right")
    return fig
