"""Euler and Euler-ancestral samplers in k-diffusion form (Karras et al. 2022; Crowson's k-diffusion)."""

import torch

from ..noise import draw_noise
from .base import SigmaScheduler, ve_x0
from .config import BETA_DEFAULTS


class EulerDiscreteScheduler(SigmaScheduler):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0_hat) / sigma
    (Karras et al. 2022, Algorithm 2 without churn):

        d       = (x_i - x0_hat(x_i, sigma_i)) / sigma_i
        x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * d
    """

    _defaults = {**BETA_DEFAULTS, "prediction_type": "epsilon", "interpolation_type": "linear",
                 "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                 "sigma_min": None, "sigma_max": None, "timestep_spacing": "linspace",
                 "timestep_type": "discrete", "steps_offset": 0, "rescale_betas_zero_snr": False,
                 "final_sigmas_type": "zero"}
    _only = {**SigmaScheduler._only, "interpolation_type": ("linear",), "timestep_type": ("discrete",),
             "rescale_betas_zero_snr": (False,), "final_sigmas_type": ("zero", "sigma_min")}

    def _step(self, model_output, timestep, sample, **_):
        i = self._index(timestep)
        x = sample.to(torch.float32)  # diffusers steps a float32 copy; kept for parity
        sigma = self.sigmas[i]
        x0 = ve_x0(self._cfg["prediction_type"], model_output, x, sigma)
        d = (x - x0) / sigma
        prev = x + d * (self.sigmas[i + 1] - sigma)
        self._step_index += 1
        return prev.to(model_output.dtype), x0


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    """Euler step to sigma_down, then fresh noise of std sigma_up (k-diffusion ``sample_euler_ancestral``,
    eta = 1), so that sigma_down^2 + sigma_up^2 = sigma_{i+1}^2:

        sigma_up   = sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)
        sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)
        x_{i+1}    = x_i + (sigma_down - sigma_i) * (x_i - x0_hat) / sigma_i + sigma_up * z
    """

    _defaults = {**BETA_DEFAULTS, "prediction_type": "epsilon", "timestep_spacing": "linspace",
                 "steps_offset": 0, "rescale_betas_zero_snr": False}
    _only = {"rescale_betas_zero_snr": (False,)}

    def _step(self, model_output, timestep, sample, generator=None, **_):
        i = self._index(timestep)
        x = sample.to(torch.float32)
        s_from, s_to = self.sigmas[i], self.sigmas[i + 1]
        x0 = ve_x0(self._cfg["prediction_type"], model_output, x, s_from)
        sigma_up = (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5
        sigma_down = (s_to**2 - sigma_up**2) ** 0.5
        prev = x + (x - x0) / s_from * (sigma_down - s_from)
        z = draw_noise(model_output.shape, generator, model_output.device, model_output.dtype)
        prev = prev + z * sigma_up
        self._step_index += 1
        return prev.to(model_output.dtype), x0
