"""FreeInit (Wu et al., 2023, "FreeInit: Bridging Initialization Gap in Video Diffusion Models").

A video model is trained on noised videos whose low frequencies (in space and time) still carry the
clip: even at the last timestep, sqrt(abar_T) of the video is left in. Sampling starts from pure
noise, whose low frequencies carry nothing. FreeInit closes that gap by sampling more than once:

    x0 = denoise(x_T)                                        pass 1: the plain generation
    z  = sqrt(abar_T) x0 + sqrt(1 - abar_T) eps              diffuse x0 back to the first timestep,
                                                             with the starting noise eps
    x_T' = IFFT( LPF * FFT(z) + (1 - LPF) * FFT(eps') )      its low frequencies, fresh noise eps'
                                                             for the high ones
    x0 = denoise(x_T')                                       pass 2, and so on (``num_iters`` passes)

LPF is a low-pass filter over the (frames, height, width) frequencies (``free_init_filter``). With
``use_fast_sampling`` (the paper's coarse-to-fine) pass k of n takes int(steps * k / n) steps.

Each pass is the pipeline's own ``denoise``; nothing here copies the loop. Where it plugs in: the
pipeline's ``free_init`` (None, or these settings; ``pipe.enable_free_init(...)``), which ``__call__``
asks at its step 3 to run ``FreeInit.sample`` instead of one ``denoise``. The filter and the mix
follow diffusers' ``FreeInitMixin`` (``free_init_filter`` equals its filter for the three methods).
The diffusion back uses the training schedule's last timestep in the VP form above for every
scheduler (diffusers calls the scheduler's ``add_noise`` at that timestep, which is this formula for
DDIM and DDPM); for schedulers that start from noise of std ``init_noise_sigma`` the result is scaled
by it, as the first starting noise was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import checks
from ..noise import draw_noise

FILTER_METHODS = ("butterworth", "gaussian", "ideal")


def check_free_init_args(num_iters=3, method="butterworth", order=4, spatial_stop_frequency=0.25,
                         temporal_stop_frequency=0.25, use_fast_sampling=False):
    """ValueError naming the first bad argument of FreeInit or of its filter."""
    checks.positive_int("num_iters", num_iters, hint=" (1 = plain sampling)")
    checks.one_of("method", method, FILTER_METHODS)
    checks.number("order", order, low=0, low_open=True)
    checks.number("spatial_stop_frequency", spatial_stop_frequency, low=0, high=1)
    checks.number("temporal_stop_frequency", temporal_stop_frequency, low=0, high=1)
    checks.boolean("use_fast_sampling", use_fast_sampling)


def free_init_filter(shape, method="butterworth", order=4, spatial_stop_frequency=0.25,
                     temporal_stop_frequency=0.25, device=None) -> torch.Tensor:
    """The low-pass filter (float32, ``shape``) over the last three axes (frames, height, width),
    laid out as the frequencies are after ``fftshift`` (zero frequency at the centre).

    Each axis of length n gets the normalised coordinate 2i/n - 1 in [-1, 1); the squared distance
    from the centre is d^2 = ((d_s / d_t) (2t/F - 1))^2 + (2h/H - 1)^2 + (2w/W - 1)^2, with d_s, d_t
    the spatial and temporal stop frequencies (time is stretched by d_s / d_t), and the filter is

        butterworth   1 / (1 + (d^2 / d_s^2)^order)
        gaussian      exp(-d^2 / (2 d_s^2))
        ideal         1 where d^2 <= 2 d_s, else 0      (the rule of the original code and diffusers)

    A stop frequency of 0 gives the all-zero filter (keep nothing of the video).
    """
    check_free_init_args(method=method, order=order, spatial_stop_frequency=spatial_stop_frequency,
                         temporal_stop_frequency=temporal_stop_frequency)
    shape = tuple(shape)
    if len(shape) < 3 or not all(checks.is_integer(n) and n >= 1 for n in shape):
        raise ValueError(f"shape must have at least 3 positive integer sizes (..., frames, height, width), "
                         f"got {shape!r}")
    ds, dt = float(spatial_stop_frequency), float(temporal_stop_frequency)
    if ds == 0 or dt == 0:
        return torch.zeros(shape, device=device)

    def axis(n):  # float64, so the values round to float32 once, at the end
        return 2 * torch.arange(n, dtype=torch.float64) / n - 1

    f, h, w = shape[-3:]
    d2 = ((ds / dt) * axis(f))[:, None, None] ** 2 + axis(h)[None, :, None] ** 2 + axis(w)[None, None, :] ** 2
    if method == "butterworth":
        lpf = 1 / (1 + (d2 / ds**2) ** order)
    elif method == "gaussian":
        lpf = torch.exp(-d2 / (2 * ds**2))
    else:
        lpf = (d2 <= 2 * ds).double()
    return lpf.float().expand(shape).contiguous().to(device)


def mix_frequencies(low, high, low_pass) -> torch.Tensor:
    """IFFT(low_pass * FFT(low) + (1 - low_pass) * FFT(high)) over the last three axes, real part:
    the low frequencies of ``low`` with the high frequencies of ``high``."""
    dims = (-3, -2, -1)

    def spectrum(x):
        return torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)

    mixed = spectrum(low) * low_pass + spectrum(high) * (1 - low_pass)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real


@dataclass(frozen=True)
class FreeInit:
    """The settings of ``pipe.enable_free_init(...)`` and the passes they make (``sample``)."""

    num_iters: int = 3
    use_fast_sampling: bool = False
    method: str = "butterworth"
    order: float = 4
    spatial_stop_frequency: float = 0.25
    temporal_stop_frequency: float = 0.25

    def __post_init__(self):
        check_free_init_args(self.num_iters, self.method, self.order, self.spatial_stop_frequency,
                             self.temporal_stop_frequency, self.use_fast_sampling)

    def steps(self, num_inference_steps, iteration):
        """Steps of pass ``iteration`` (0-based): all of them, or coarse-to-fine with fast sampling."""
        if not self.use_fast_sampling:
            return num_inference_steps
        return max(1, int(num_inference_steps / self.num_iters * (iteration + 1)))

    def reinitialize(self, x0, noise, alphas_cumprod, generator):
        """The next pass's starting noise (standard-normal scale) from the last pass's result ``x0`` and
        the first starting noise ``noise``: diffuse back to the last training timestep, keep the low
        frequencies, take the high ones from fresh noise (drawn from ``generator``)."""
        abar = alphas_cumprod[-1].item()
        z = (math.sqrt(abar) * x0 + math.sqrt(1 - abar) * noise).float()
        fresh = draw_noise(x0.shape, generator, x0.device, torch.float32)
        low_pass = free_init_filter((1, *x0.shape[1:]), self.method, self.order, self.spatial_stop_frequency,
                                    self.temporal_stop_frequency, device=x0.device)
        return mix_frequencies(z, fresh, low_pass).to(x0.dtype)

    def sample(self, pipe, latents, context, num_inference_steps, guidance_scale=9.0, eta=0.0, generator=None,
               callback_on_step_end=None):
        """``num_iters`` passes of ``pipe.denoise`` from ``latents`` (the starting noise, already scaled by
        the scheduler's ``init_noise_sigma``); returns the last pass's latents. The progress bar says
        which pass it is."""
        scheduler = pipe.scheduler
        noise = latents / scheduler.init_noise_sigma
        x = latents
        for k in range(self.num_iters):
            scheduler.set_timesteps(self.steps(num_inference_steps, k), device=latents.device)
            if k > 0:
                x = self.reinitialize(x, noise, scheduler.alphas_cumprod, generator) * scheduler.init_noise_sigma
            x = pipe.denoise(x, context, scheduler.timesteps, guidance_scale, eta, generator, callback_on_step_end,
                             desc=f"FreeInit pass {k + 1}/{self.num_iters}")
        return x
