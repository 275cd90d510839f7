"""DDPM ancestral sampling (Ho, Jain & Abbeel 2020)."""

import numpy as np
import torch

from ..noise import draw_noise
from .base import Scheduler, spaced_timesteps, vp_x0_eps
from .config import BETA_DEFAULTS


class DDPMScheduler(Scheduler):
    """Sample the posterior q(x_t' | x_t, x0_hat), t' = the next timestep of the schedule
    (eqs. 6-7 of the paper, generalised to skipped steps):

        alpha = abar_t / abar_t',  beta = 1 - alpha
        mean  = sqrt(abar_t') beta / (1 - abar_t) * x0_hat + sqrt(alpha) (1 - abar_t') / (1 - abar_t) * x_t
        var   = (1 - abar_t') / (1 - abar_t) * beta        ("fixed_small";  "fixed_large": var = beta)
        x_t'  = mean + sqrt(var) * z       (no noise when t = 0; abar_t' = 1 after the last step)
    """

    stateless = True  # each step looks its timestep up afresh
    _defaults = {**BETA_DEFAULTS, "variance_type": "fixed_small", "clip_sample": True,
                 "prediction_type": "epsilon", "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                 "clip_sample_range": 1.0, "sample_max_value": 1.0, "timestep_spacing": "leading",
                 "steps_offset": 0, "rescale_betas_zero_snr": False}
    _only = {"thresholding": (False,), "rescale_betas_zero_snr": (False,),
             "variance_type": ("fixed_small", "fixed_large")}

    def _set_timesteps(self, n, device):
        c = self._cfg
        t = spaced_timesteps(c["timestep_spacing"], n, c["num_train_timesteps"], c["steps_offset"])
        self.timesteps = torch.from_numpy(t.astype(np.int64)).to(device)

    def _step(self, model_output, timestep, sample, generator=None, **_):
        c = self._cfg
        i = self.index_for_timestep(timestep)
        prev_t = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1
        a_t = self.alphas_cumprod[timestep]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)
        alpha = a_t / a_prev
        beta = 1 - alpha
        x0, _ = vp_x0_eps(c["prediction_type"], model_output, sample, a_t**0.5, (1 - a_t) ** 0.5)
        if c["clip_sample"]:
            x0 = x0.clamp(-c["clip_sample_range"], c["clip_sample_range"])
        mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + (alpha**0.5 * (1 - a_prev) / (1 - a_t)) * sample
        if timestep > 0:
            z = draw_noise(model_output.shape, generator, model_output.device, model_output.dtype)
            var = beta if c["variance_type"] == "fixed_large" else \
                torch.clamp((1 - a_prev) / (1 - a_t) * beta, min=1e-20)
            mean = mean + var**0.5 * z
        return mean, x0
