"""RePaint's resampling (Lugmayr et al., 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic
Models", Algorithm 1): each step of the reverse process taken U times, going back and forth, so that the frames
the model draws get more than one chance to agree with the ones held to keyframes.

The held frames (``techniques.keyframes``) are replaced after every step, so the model only sees them at the next
step and the frames around them can be left disagreeing (a seam: a larger change into and out of a held frame).
RePaint's answer: after the step from t to t' (and the keyframe hook), noise the sample back to t with the forward
process over the skipped stretch,

    x_t = sqrt(a_t / a_t') x_t' + sqrt(1 - a_t / a_t') eps,     eps ~ N(0, I),  a = alphas_cumprod      (``back``)

(RePaint's x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I), for a step that skips timesteps), then take the step (and
the hook) again from there. U passes per step in all (``keyframe_resample=U``; 1 is the plain loop, the same
numbers). As in RePaint's schedule, the last step, the one to the clean latents, is taken once: N steps make
(N - 1) U + 1 UNet passes (``unet_calls``), which the progress bar counts.

Built: jump length 1 (back one step, forward one step; the paper's j = 1). Its longer jumps (back j steps, then j
forward) are not built. The noise ``eps`` is drawn with the loop's ``generator``, after that step's own draws, so a
seeded run gives the same video again; U = 1 draws nothing more.

A step can only be taken again by a sampler that keeps nothing between steps: DDIM and DDPM (``stateless`` on
the scheduler). DPM-Solver++, PNDM and LMS keep their last model outputs, Euler's and LCM's samplers a step
counter; those are refused by name (``check``).

Where it plugs in: an option of the shared loop, ``pipe.denoise(..., resample=U)`` (a hook cannot take a step
again), which ``pipe(..., keyframe_resample=U)`` passes on when there are held frames.
"""

from __future__ import annotations

import torch

from ..checks import positive_int
from ..noise import draw_noise


def check(passes, scheduler, name="resample") -> int:
    """``passes`` (U) an integer >= 1; above 1, a ``scheduler`` that keeps nothing between steps (else ValueError
    naming it and what to use)."""
    passes = positive_int(name, passes, hint=" (1: each step once, the plain loop; U: RePaint's U passes per step)")
    if passes > 1 and not getattr(scheduler, "stateless", False):
        raise ValueError(f"{name}={passes}: {type(scheduler).__name__} keeps state between steps (its last model "
                         f"outputs or a step counter), so a step cannot be taken again; use a sampler without one, "
                         f"DDIM or DDPM: pipe.scheduler = t2vlab.schedulers.from_name('ddim', pipe.scheduler.config)")
    return passes


def back(x, a_from, a_to, noise):
    """The forward process from level a_from = a_t' (less noisy) up to a_to = a_t: sqrt(r) x + sqrt(1 - r) eps,
    r = a_t / a_t'."""
    r = a_to / a_from
    return r**0.5 * x + (1 - r) ** 0.5 * noise


class Resampling:
    """RePaint's passes over a schedule ``timesteps`` of ``scheduler``: how many at step i (``passes``), and the
    way back from after step i to its start (``back``), its noise drawn with ``generator``."""

    def __init__(self, passes, scheduler, timesteps, generator=None):
        self.passes_per_step = check(passes, scheduler)
        self.scheduler, self.timesteps, self.generator = scheduler, timesteps, generator

    def passes(self, i) -> int:
        """U at every step but the last (to the clean latents), which is taken once."""
        return 1 if i == len(self.timesteps) - 1 else self.passes_per_step

    @property
    def unet_calls(self) -> int:
        """(N - 1) U + 1 for N steps: what the loop really runs (N when U = 1)."""
        return (len(self.timesteps) - 1) * self.passes_per_step + 1

    def back(self, x, i):
        """x after step i (at the schedule's next timestep, the level the keyframe hook assumes too) noised back to
        step i's timestep."""
        a = self.scheduler.alphas_cumprod.to(device=x.device, dtype=torch.float64)
        a_t, a_next = a[int(self.timesteps[i])], a[int(self.timesteps[i + 1])]
        noise = draw_noise(x.shape, self.generator, x.device, x.dtype)
        return back(x, a_next.item(), a_t.item(), noise)
